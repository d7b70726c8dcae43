"""Comparing result tables: exact, except floating point columns, which get a stated tolerance.

Float sums and averages depend on summation order, and the order follows batch
boundaries, which differ between 1, 2 and 4 workers (and between runs). The engine
does not promise bit-identical floats across worker counts; it promises results
equal within ``FLOAT_RTOL`` (relative) of each other and of an independent oracle.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FLOAT_RTOL = 1e-9  # relative tolerance for float columns (sums of ~1e6 doubles drift ~1e-13)


def assert_tables_match(got: pa.Table, want: pa.Table, rtol: float = FLOAT_RTOL) -> None:
    """Same schema and rows in the same order; float columns equal to ``rtol``, nulls alike."""
    assert got.schema.equals(want.schema), f"schemas differ:\n{got.schema}\nvs\n{want.schema}"
    assert got.num_rows == want.num_rows, f"{got.num_rows} rows, expected {want.num_rows}"
    for name in got.column_names:
        a, b = got.column(name), want.column(name)
        if pa.types.is_floating(a.type):
            assert a.is_null().equals(b.is_null()), f"column {name!r}: nulls differ"
            x = a.drop_null().to_numpy()
            y = b.drop_null().to_numpy()
            np.testing.assert_allclose(x, y, rtol=rtol, err_msg=f"column {name!r}")
        else:
            assert a.equals(b), f"column {name!r} differs"
