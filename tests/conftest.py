"""Shared fixtures: the array backends every model test runs on, and the committed reference fixtures."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# CI (.ci/run) sets GROUPVIT_REQUIRE_REFERENCE=1: there the reference packages are installed, so a test skipped for
# a missing import (torch, transformers, an extra's package) hides a failure and fails instead.
REQUIRE_REFERENCE = os.environ.get("GROUPVIT_REQUIRE_REFERENCE") == "1"
REFERENCE_MODULES = (
    "torch",
    "transformers",
    "ftfy",
    "huggingface_hub",
    "jupytext",
    "nbclient",
    "array_api_strict",
    "jax",
)
_IMPORT_SKIP = ("could not import", "pip install")  # pytest.importorskip's own reason, and ours


def pytest_configure(config):
    if not REQUIRE_REFERENCE:
        return
    for name in REFERENCE_MODULES:
        try:
            importlib.import_module(name)
        except Exception as err:  # any import failure is the same verdict here
            raise pytest.UsageError(f"GROUPVIT_REQUIRE_REFERENCE=1 but {name} cannot be imported: {err!r}") from err


def _fail_import_skip(report) -> None:
    if REQUIRE_REFERENCE and report.skipped and any(s in str(report.longrepr) for s in _IMPORT_SKIP):
        report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_import_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_import_skip(outcome.get_result())  # a module-level importorskip skips the whole file at collection


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
    # JAX (compiled by jax.jit, immutable arrays) and torch tensors through array-api-compat: the big Array API
    # libraries. Skipped when they are not installed (the README's test command installs neither).
    yield pytest.param("jax", id="jax")
    yield pytest.param("torch", id="torch")
    yield pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(not _cupy_available(), reason="no CUDA device"))


def jax_x64():
    """jax.numpy with float64 enabled (JAX narrows to float32 by default; the parity tests compare float64)."""
    jax = pytest.importorskip("jax", reason="the jax backend needs jax: pip install -e '.[jax]'")
    jax.config.update("jax_enable_x64", True)
    return jax.numpy


@pytest.fixture(params=list(_backend_params()))
def backend(request):
    """(xp, device) for one backend."""
    if request.param == "numpy":
        import array_api_compat.numpy as xp

        return xp, None
    if request.param == "strict":
        xp = pytest.importorskip("array_api_strict")
        return xp, xp.Device("device1")
    if request.param == "jax":
        return jax_x64(), None
    if request.param == "torch":
        pytest.importorskip("torch", reason="the torch backend needs torch: pip install -e '.[reference]'")
        import array_api_compat.torch as xp

        return xp, None
    import array_api_compat.cupy as xp

    return xp, None
