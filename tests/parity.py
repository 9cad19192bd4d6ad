"""The suite's one comparison rule: an absolute bound, with no relative slack.

`np.testing.assert_allclose(a, b, atol=...)` also allows `rtol=1e-7` of |b|, which is float32 rounding: an output
computed in float32 passes a float64 check written that way (measured on the Gumbel test: a real difference of
7.7e-15 under an allowance of 2.7e-7). Every tolerance in the suite goes through `assert_close` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from groupvit_np.backend import to_numpy

# float64 end to end against torch's float64: only summation order separates the two (1e-13 worst seen on the
# full-size model, ~1e-14 on the small ones). A result rounded to float32 anywhere misses this by orders of magnitude.
HF_FLOAT64_ATOL = 1e-10


def assert_close(actual: Any, expected: Any, atol: float, err_msg: str = "", dtype: Any = None) -> None:
    """|actual - expected| <= atol everywhere (rtol = 0), shapes equal (a scalar `expected` broadcasts).

    `actual` may be an array of any backend; `dtype`, when given, is checked too.
    """
    a = to_numpy(actual)
    e = np.asarray(expected)
    if e.ndim:
        assert a.shape == e.shape, f"{err_msg}: shape {a.shape} != expected {e.shape}"
    if dtype is not None:
        assert a.dtype == np.dtype(dtype), f"{err_msg}: dtype {a.dtype} != expected {np.dtype(dtype)}"
    np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=err_msg)


def assert_matches_hf64(actual: Any, expected: Any, err_msg: str = "") -> None:
    """A float64 output against transformers' float64 output: float64 dtype, within HF_FLOAT64_ATOL."""
    assert_close(actual, expected, HF_FLOAT64_ATOL, err_msg, dtype=np.float64)
