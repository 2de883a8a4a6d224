"""Strict JAX configuration for every test: several CPU devices, strict promotion, x32.

``JAXSINKS_TEST_X64=1`` runs the suite once more with ``jax_enable_x64`` (still with strict
promotion), as float64 simulations do. Tests that only make sense in x32 are marked with
`x32_only`; `X64` says which mode this run is in.
"""

import os

# Must precede the first import of jax anywhere in the test process.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

X64 = os.environ.get("JAXSINKS_TEST_X64", "") not in ("", "0")

jax.config.update("jax_enable_x64", X64)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

#: Mark a test that only makes sense with JAX's default 32-bit types; skipped under x64.
x32_only = pytest.mark.skipif(X64, reason="JAXSINKS_TEST_X64=1: this test is about x32 defaults")

settings.register_profile(
    "jaxsinks",
    deadline=None,  # first calls compile
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("jaxsinks")


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def maybe_jit(request):
    """Run a function as it is and under `jax.jit`: the same behaviour is expected of both."""
    return jax.jit if request.param else (lambda f, **kw: f)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "x64: runs only with JAXSINKS_TEST_X64=1 (test_x64.py runs them in a subprocess otherwise)",
    )


def pytest_collection_modifyitems(config, items):
    """Without JAXSINKS_TEST_X64, deselect the `x64` tests: they run in their own subprocess."""
    if X64:
        return
    x64 = [item for item in items if item.get_closest_marker("x64")]
    if x64:
        config.hook.pytest_deselected(items=x64)
        items[:] = [item for item in items if not item.get_closest_marker("x64")]
