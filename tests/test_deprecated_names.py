"""Names renamed in this release still work for one release, each with a DeprecationWarning that
names the new name:

* `DeviceBuffer.count` -> `recorded` (every frame recorded);
* a streaming sink's `count` -> `staged` (frames staged in the block);
* `CsvSink.create(chunk=)` and `HostBuffer.create(chunk=)` -> `block=` (rows per flush;
  `ZarrSink.create(chunk=)` keeps its name: it is the Zarr chunk);
* `DeviceBuffer.create(frame, capacity)` -> `capacity=` (keyword-only, as in every sink);
* `ZarrSink.create(fields=)`, `Campaign.create_run(fields=)` and `Campaign.run_config(fields=)`
  -> `field_config=` (per-field storage overrides; elsewhere `fields` names fields).
"""

import inspect

import jax.numpy as jnp
import numpy as np
import pytest
from zarr_helpers import EXAMPLE, memory_store, run_steps, steps

import jaxsinks as js


def test_device_buffer_count_is_recorded():
    buf = run_steps(js.DeviceBuffer.create(EXAMPLE, capacity=4, overflow="drop"), steps(0, 6))
    with pytest.deprecated_call(
        match=r"`DeviceBuffer.count` is deprecated.*`DeviceBuffer.recorded`"
    ):
        count = buf.count
    assert int(count) == int(buf.recorded) == 6


@pytest.mark.parametrize("kind", ["zarr", "csv", "host"])
def test_streaming_count_is_staged(tmp_path, kind):
    if kind == "zarr":
        sink = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4)
    elif kind == "csv":
        sink = js.CsvSink.create(tmp_path / "log.csv", EXAMPLE, block=4)
    else:
        sink = js.HostBuffer.create(EXAMPLE, capacity=16, block=4)
    sink = run_steps(sink, steps(0, 6))
    name = type(sink).__name__
    with pytest.deprecated_call(match=rf"`{name}.count` is deprecated.*`{name}.staged`"):
        count = sink.count
    assert int(count) == int(sink.staged) == 2 and int(sink.recorded) == 6
    js.close(sink)
    if kind == "host":
        sink.release()


def test_device_buffer_capacity_by_position_warns_and_still_works():
    with pytest.deprecated_call(
        match=r"`capacity` to `DeviceBuffer.create` by position.*`capacity=`"
    ):
        old = js.DeviceBuffer.create(EXAMPLE, 5, every=2)
    new = js.DeviceBuffer.create(EXAMPLE, capacity=5, every=2)
    assert old.capacity == new.capacity == 5 and old.options == new.options


def test_capacity_is_keyword_only_in_every_create():
    for create in (
        js.DeviceBuffer.create,
        js.HostBuffer.create,
        js.CsvSink.create,
        js.ZarrSink.create,
    ):
        param = inspect.signature(create).parameters["capacity"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, create.__qualname__


def test_capacity_twice_or_too_many_positions_is_an_error():
    with pytest.raises(js.ConfigError, match="got `capacity` twice"):
        js.DeviceBuffer.create(EXAMPLE, 5, capacity=5)
    with pytest.raises(TypeError):
        js.DeviceBuffer.create(EXAMPLE, 5, "drop")  # only `capacity` was ever positional


@pytest.mark.parametrize("kind", ["csv", "host"])
def test_chunk_is_now_block(tmp_path, kind):
    if kind == "csv":
        create, args, kwargs = js.CsvSink.create, (tmp_path / "log.csv", EXAMPLE), {}
    else:
        create, args, kwargs = js.HostBuffer.create, (EXAMPLE,), {"capacity": 16}
    name = f"{create.__qualname__}"
    with pytest.deprecated_call(match=rf"`{name}\(chunk=...\)` is deprecated.*use `block=`"):
        sink = create(*args, chunk=3, **kwargs)
    assert sink.block == 3
    sink = run_steps(sink, steps(0, 7))
    assert int(sink.flushed) == 6 and int(sink.staged) == 1
    with pytest.raises(js.ConfigError, match="got both `block` and its deprecated name `chunk`"):
        create(*args, chunk=3, block=3, **kwargs)
    assert "chunk" not in inspect.signature(create).parameters
    js.close(sink)
    if kind == "host":
        sink.release()


def test_zarr_chunk_keeps_its_name():
    """`chunk` is a Zarr chunk in ZarrSink: not deprecated there (warnings are errors here)."""
    sink = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=3)
    assert sink.block == 3
    js.close(sink)


F16 = {"x": js.FieldConfig(dtype="float16", dims=("xyz",))}


def test_zarr_fields_is_now_field_config():
    with pytest.deprecated_call(
        match=r"`ZarrSink.create\(fields=...\)` is deprecated.*use `field_config=`"
    ):
        old = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4, fields=F16)
    new = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4, field_config=F16)
    stored = {a.name: a.dtype for a in old.layout.fields}
    assert old.layout == new.layout and stored == {"e": np.float32, "x": np.float16}
    for sink in (old, new):
        js.close(run_steps(sink, steps(0, 5)))
    with pytest.raises(
        js.ConfigError, match="got both `field_config` and its deprecated name `fields`"
    ):
        js.ZarrSink.create(memory_store(), EXAMPLE, fields=F16, field_config=F16)
    assert "fields" not in inspect.signature(js.ZarrSink.create).parameters


@pytest.mark.parametrize("method", ["create_run", "run_config"])
def test_campaign_fields_is_now_field_config(method):
    campaign = js.Campaign.create(memory_store())
    call = getattr(campaign, method)
    args = ("a", EXAMPLE) if method == "create_run" else ("a",)
    with pytest.deprecated_call(
        match=rf"`Campaign.{method}\(fields=...\)` is deprecated.*use `field_config=`"
    ):
        made = call(*args, chunk=4, fields=F16)
    if method == "create_run":
        js.close(run_steps(made, steps(0, 5)))
        assert campaign.open_run("a")["x"].dtype == np.float16
    else:
        assert made.options == {"chunk": 4, "field_config": F16}
    with pytest.raises(
        js.ConfigError, match="got both `field_config` and its deprecated name `fields`"
    ):
        call(*args, chunk=4, fields=F16, field_config=F16)


def test_a_run_config_with_the_old_option_name_still_loads():
    """A config written before the rename (`to_config` with an option `fields`) still works."""
    campaign = js.Campaign.create(memory_store())
    config = campaign.run_config("a", chunk=4, field_config=F16).to_config()
    config["options"]["fields"] = config["options"].pop("field_config")
    with pytest.deprecated_call(match=r"`RunConfig` option `fields` is deprecated.*`field_config`"):
        old = js.RunConfig.from_config(config)
    assert old == campaign.run_config("a", chunk=4, field_config=F16)
    config["options"]["field_config"] = config["options"]["fields"]
    with pytest.raises(js.ConfigError, match="both `field_config` and its deprecated name"):
        js.RunConfig.from_config(config)


def test_old_names_give_the_same_recording(tmp_path):
    """A CSV log written with the old spelling is the same file as one with the new."""
    frame = {"e": jnp.zeros((), jnp.float32)}

    def log(sink):
        for i in range(5):
            sink = js.record(sink, step=i, frame={"e": jnp.float32(i)})
        return js.close(sink)

    with pytest.deprecated_call():
        log(js.CsvSink.create(tmp_path / "old.csv", frame, chunk=2))
    log(js.CsvSink.create(tmp_path / "new.csv", frame, block=2))
    old = np.loadtxt(tmp_path / "old.csv", delimiter=",", skiprows=1)
    assert (tmp_path / "old.csv").read_text() == (tmp_path / "new.csv").read_text()
    assert old.shape == (5, 3)


def test_the_warnings_point_at_the_callers_line(tmp_path):
    buf = js.DeviceBuffer.create(EXAMPLE, capacity=2)
    with pytest.warns(DeprecationWarning) as caught:
        buf.count  # noqa: B018 - the attribute access is what warns
        js.DeviceBuffer.create(EXAMPLE, 2)
        log = js.CsvSink.create(tmp_path / "log.csv", EXAMPLE, chunk=2)
        run = js.ZarrSink.create(memory_store(), EXAMPLE, fields={})
        js.Campaign.create(memory_store()).run_config("a", fields={})
        js.RunConfig(root={"driver": "memory"}, run_id="a", params={}, options={"fields": {}})
    assert [w.filename for w in caught] == [__file__] * 6
    js.close(log)
    js.close(run)
