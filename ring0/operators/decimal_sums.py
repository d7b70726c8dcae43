"""Exact decimal sums on Arrow's group-by: the sum type, and overflow found instead of wrapped.

A sum of ``decimal128(p, s)`` is ``decimal128(38, s)``, of ``decimal256(p, s)``
``decimal256(76, s)`` (what Arrow's ``hash_sum`` gives, and the scale DuckDB and PostgreSQL
keep). Arrow adds the 128-bit (256-bit) integers without a check: a sum over 38 (76) digits
comes back wrapped or out of its type's range, silently. So the caller of a grouped sum:

1. ``guard`` before grouping: bounds every decimal sum column (non-null rows times the largest
   magnitude: from the type's precision, else from the column's exact min/max). Where the bound
   fits the digits, nothing more (a ``decimal128(12, 2)`` column would need 10**26 rows).
   Otherwise it appends a float64 copy of the column and asks for its sum too.
2. ``check`` after grouping: a ``DataError`` naming the aggregate when a guarded sum does
   not fit. A sum wraps only at 2**127 (2**255), above 1.7 * 10**38 (5.7 * 10**76)
   units of the last digit. Below that the decimal sum is exact and is compared exactly with
   38 (76) nines; above it, the float sum is over 1.5 * 10**digits.

Not guaranteed: a sum the float decides (one that may have wrapped) is judged right only
while the float's rounding error stays below 0.2 * 10**digits units (beyond some 30 million
rows of near-limit values in one grouped sum it may not be).

``check_unit_weights`` serves changelog input, where a decimal sum flips the sign of a
retracted value instead of multiplying by the weight (``decimal128(38, s) * int64`` would need
more than 38 digits), so a weight must be +1 or -1.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import DataError


def sum_type(t: pa.DataType) -> pa.DataType:
    """The type of a sum of decimals of type ``t`` (``decimal32``/``decimal64`` too)."""
    return pa.decimal256(76, t.scale) if pa.types.is_decimal256(t) else pa.decimal128(38, t.scale)


def digits(t: pa.DataType) -> int:
    """The digits of a decimal sum type: 38 (decimal128), 76 (decimal256)."""
    return 76 if pa.types.is_decimal256(t) else 38


def guard(
    table: pa.Table, whose: dict[str, str], aggs: dict[tuple[str, str], str]
) -> tuple[pa.Table, list[tuple[str, str, str]]]:
    """Step 1: for each decimal column of ``table`` (summed as ``aggs`` says; ``whose``: column
    -> who sums it, for errors) whose sum could exceed its sum type, a float64 copy appended
    and summed in ``aggs``. Returns the table and ``(who, sum column, its copy's sum column)``
    for ``check``."""
    checks = []
    for col, who in whose.items():
        values = table.column(col)
        if not _may_overflow(values, digits(values.type)):
            continue
        copy = f"__f{col}"
        table = table.append_column(copy, pc.cast(values, pa.float64()))
        aggs[(copy, "sum")] = f"{copy}_sum"
        checks.append((who, f"{col}_sum", f"{copy}_sum"))
    return table, checks


def check(res: pa.Table, checks: list[tuple[str, str, str]]) -> None:
    """Step 2: ``DataError`` (naming who sums) when a sum of ``res`` that ``guard`` marked
    needs more digits than its type holds."""
    for who, total, approx in checks:
        row = _first_overflow(res.column(total), res.column(approx))
        if row is None:
            continue
        t, n = res.column(total).type, digits(res.column(total).type)
        hint = ": cast the column to decimal256 (76 digits) before aggregating" if n == 38 else ""
        raise DataError(
            f"{who} in a group is about {res.column(approx)[row].as_py():.6g}, more than {t} "
            f"holds ({n} digits){hint}"
        )


def check_unit_weights(weights: pa.ChunkedArray | pa.Array, name: str, who: list[str]) -> None:
    """``DataError`` when a weight of a changelog input (column ``name``) is not +1 or -1 and
    decimal sums (``who``) would have to multiply by it."""
    bad = pc.not_equal(pc.abs(weights), 1)
    if not pc.any(bad).as_py():
        return
    raise DataError(
        f"{name} is {weights.filter(bad)[0].as_py()} in a row of a batch; over a changelog "
        f"input a decimal sum takes only rows with {name} +1 (inserted) or -1 (retracted), and "
        f"{'; '.join(who)} is one: split a row that counts n times into n rows"
    )


def _first_overflow(total: pa.ChunkedArray, approx: pa.ChunkedArray) -> int | None:
    """The index of the first decimal sum in ``total`` (float sums of the same groups:
    ``approx``) that needs more digits than its type holds; None when all fit."""
    n = digits(total.type)
    units = _units(total)  # compared as integers: Arrow compares no negative scales
    over = pc.or_(
        pc.greater(pc.abs(units), pa.scalar(10**n - 1, units.type)),
        pc.greater(pc.abs(approx), 1.5 * 10.0 ** (n - total.type.scale)),
    )
    rows = np.flatnonzero(pc.fill_null(over, False).to_numpy(zero_copy_only=False))
    return int(rows[0]) if len(rows) else None


def _may_overflow(values: pa.ChunkedArray | pa.Array, n_digits: int) -> bool:
    """Whether a sum of some of ``values`` (decimals) could need more than ``n_digits`` digits."""
    n = len(values) - values.null_count
    limit = 10**n_digits  # in units of the last digit
    if n * 10**values.type.precision <= limit:
        return False
    low, high = pc.min_max(values).as_py().values()
    big = max(abs(Fraction(low)), abs(Fraction(high)))
    return bool(n * big * Fraction(10) ** values.type.scale >= limit)


def _units(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Decimals as the same integers in units of the last digit (scale 0; no copy)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    wide = pa.types.is_decimal256(values.type)
    return arr.view(pa.decimal256(76, 0) if wide else pa.decimal128(38, 0))
