import jax


def test_several_cpu_devices_are_configured():
    assert len(jax.devices("cpu")) == 4


def test_strict_promotion_is_on():
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    assert jax.config.jax_numpy_rank_promotion == "raise"
