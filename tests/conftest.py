"""Shared fixtures: the array backends every model test runs on, and the committed reference fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _cupy_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA present without a device
        return False


def _backend_params():
    yield pytest.param("numpy", id="numpy")
    # array_api_strict on a non-default device refuses host conversion and mixing devices: if the model runs
    # there, no code path silently falls back to NumPy, which is what makes CuPy work.
    yield pytest.param("strict", id="array_api_strict-device1")
    yield pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(not _cupy_available(), reason="no CUDA device"))


@pytest.fixture(params=list(_backend_params()))
def backend(request):
    """(xp, device) for one backend."""
    if request.param == "numpy":
        import array_api_compat.numpy as xp

        return xp, None
    if request.param == "strict":
        xp = pytest.importorskip("array_api_strict")
        return xp, xp.Device("device1")
    import array_api_compat.cupy as xp

    return xp, None
