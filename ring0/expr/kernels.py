"""The pyarrow kernels behind the operators and casts (``compiler.py`` picks them).

Each takes and returns ``pa.Array`` or ``pa.Scalar`` values of the types the
compiler converted its operands to (int64 for integer arithmetic, float64 for
float arithmetic). Semantics are the package docstring's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ring0.expr.coerce import kind
from ring0.expr.term import ARROW_ERRORS, Op, Value, broadcast

COMPARE = {
    "=": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}
INT_OPS: dict[str, Op] = {
    "+": pc.add_checked,
    "-": pc.subtract_checked,
    "*": pc.multiply_checked,
    "//": pc.divide_checked,
}
FLOAT_OPS: dict[str, Op] = {
    "+": pc.add,
    "-": pc.subtract,
    "*": pc.multiply,
    "/": pc.divide,
    "//": lambda a, b: pc.trunc(pc.divide(a, b)),
}


def int_mod(a: Value, b: Value) -> Value:
    # Truncated remainder (sign of the dividend, like DuckDB and C): a - trunc(a / b) * b.
    return pc.subtract(a, pc.multiply(pc.divide_checked(a, b), b))


def float_mod(a: Value, b: Value) -> Value:
    arrays = broadcast((a, b))
    if all(isinstance(v, pa.Scalar) for v in arrays):
        arrays = [pa.repeat(v, 1) for v in arrays]
    nulls = [v.is_null() for v in arrays if v.null_count]
    x, y = (v.fill_null(0.0).to_numpy(zero_copy_only=False) for v in arrays)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.fmod(x, y)
    mask = None
    if nulls:
        mask = nulls[0] if len(nulls) == 1 else pc.or_(nulls[0], nulls[1])
        mask = mask.to_numpy(zero_copy_only=False)
    return pa.array(out, type=pa.float64(), mask=mask)


INT_OPS["%"] = int_mod
FLOAT_OPS["%"] = float_mod


def epoch_ms(v: Value) -> Value:
    """Milliseconds since the epoch of a timestamp or date value, floored, as int64."""
    t = v.type
    if kind(t) == "date":
        return pc.cast(pc.cast(v, pa.timestamp("ms")), pa.int64())
    if t.unit == "s":
        return pc.multiply_checked(pc.cast(v, pa.int64()), 1000)
    if t.unit != "ms":
        v = pc.cast(pc.floor_temporal(v, unit="millisecond"), pa.timestamp("ms", t.tz), safe=False)
    return pc.cast(v, pa.int64())


def cast_op(src: pa.DataType, target: pa.DataType) -> Op:
    """The kernel of an explicit cast (the package docstring gives the rules)."""
    ks, kt = kind(src), kind(target)
    if ks == "float" and kt == "int":  # round half to even, like DuckDB for doubles

        def op(v: Value) -> Value:
            return pc.cast(pc.round(v, round_mode="half_to_even"), target)

    elif ks == "int" and kt == "timestamp":  # integers are epoch milliseconds

        def op(v: Value) -> Value:
            return pc.cast(pc.cast(v, pa.int64()), target)

    elif ks in ("timestamp", "date") and kt == "int":

        def op(v: Value) -> Value:
            return pc.cast(epoch_ms(v), target)

    elif ks == "timestamp" and kt == "timestamp":  # to milliseconds: floor

        def op(v: Value) -> Value:
            return pc.cast(pc.floor_temporal(v, unit="millisecond"), target, safe=False)

    elif ks == "timestamp" and kt == "date":

        def op(v: Value) -> Value:
            return pc.cast(v, target, safe=False)

    else:

        def op(v: Value) -> Value:
            return pc.cast(v, target)

    return op


def cast_constant(value: pa.Scalar, target: pa.DataType) -> pa.Scalar:
    """``value.cast(target)``; a string read as a zoned timestamp is taken to be UTC."""
    if kind(value.type) == "string" and kind(target) == "timestamp" and target.tz is not None:
        return value.cast(pa.timestamp(target.unit)).cast(target)
    return value.cast(target)


def fits(value: pa.Scalar | None, target: pa.DataType) -> bool:
    """Whether a constant converts to ``target`` and back unchanged."""
    if value is None or not value.is_valid:
        return True
    try:
        return bool(value.cast(target).cast(value.type) == value)
    except ARROW_ERRORS:
        return False


_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a double into two halves


def _two_product(a: np.ndarray, b: np.floating) -> tuple[np.ndarray, np.ndarray]:
    """``a * b`` rounded, and the exact error: ``a * b == p + e`` (Dekker)."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def round_half_away(x: np.ndarray, digits: int) -> np.ndarray:
    """Doubles rounded to ``digits`` decimals, half away from zero, on their exact value.

    As DuckDB: ``round(975.15, 1)`` is 975.1, because the double 975.15 is
    975.1499999…: a tie is a tie only if the exact product ``x * 10**digits`` is
    one (its rounding error, ``_two_product``, decides). Like DuckDB, a result
    that overflows is the input itself; NaN and infinities stay as they are.
    """
    x = np.asarray(x, dtype=np.float64)
    m = 10.0 ** abs(digits)
    with np.errstate(over="ignore", invalid="ignore"):
        if digits >= 0:
            y, err = _two_product(x, np.float64(m))  # x * m == y + err exactly
        else:
            y = x / m
            p, e = _two_product(y, np.float64(m))
            err = (x - p) - e  # the exact x - y*m: its sign says where x/m really is
        a = np.abs(y)
        f = np.floor(a)
        frac = a - f
        signed = np.where(y < 0, -err, err)
        up = (frac > 0.5) | ((frac == 0.5) & (signed >= 0))
        r = np.where(a >= 2.0**52, y, np.copysign(f + up, y))  # already whole: as it is
        out = r / m if digits >= 0 else r * m
        keep = ~np.isfinite(y) | ~np.isfinite(out)
    return np.where(keep, x, out)


def round_float(v: Value, digits: int) -> Value:
    """``round_half_away`` over an Arrow double array or scalar, nulls kept."""
    if isinstance(v, pa.Scalar):
        if not v.is_valid:
            return v
        return pa.scalar(float(round_half_away(np.array([v.as_py()]), digits)[0]), pa.float64())
    arr = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
    values = np.asarray(pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    out = pa.array(round_half_away(values, digits), pa.float64())
    if arr.null_count:
        return pc.if_else(pc.is_null(arr), pa.scalar(None, pa.float64()), out)
    return out
