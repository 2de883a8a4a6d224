"""Plots and movies of recorded runs (jaxsinks._tools.viz): lines drawn, PNGs and GIFs written."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from run_helpers import PNG_SIGNATURE, STEPS, frame_at, write_per_system_run, write_run  # noqa: F401

import jaxsinks as js
from jaxsinks._tools import sources, viz


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return js.open(write_run(tmp_path_factory.mktemp("viz") / "run.zarr"))


@pytest.fixture(scope="module")
def per_system_run(tmp_path_factory):
    return js.open(write_per_system_run(tmp_path_factory.mktemp("viz") / "per_system.zarr"))


def gif_frames(path):
    with Image.open(path) as im:
        frames = []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append((np.asarray(im.convert("RGB")), im.info.get("duration")))
        return frames


# ---------------------------------------------------------------------------------- series


def test_a_scalar_field_is_one_line_against_step_or_time(run):
    [(label, x, y)] = viz.series(run, "e")
    assert label == "e" and x.tolist() == list(range(STEPS))
    assert y.tolist() == [2.0 * s for s in range(STEPS)]
    [(_, t, _)] = viz.series(run, "e", x="time")
    assert t.tolist() == [0.5 * s for s in range(STEPS)]


def test_a_1d_field_is_one_line_per_entry_or_per_selected_system(run):
    lines = viz.series(run, "energy")
    assert [label for label, _, _ in lines] == ["energy[0]", "energy[1]", "energy[2]"]
    np.testing.assert_array_equal(lines[2][2], 2.0 * np.arange(STEPS))
    picked = viz.series(run, "energy", systems=[2, 0])
    assert [label for label, _, _ in picked] == ["energy[2]", "energy[0]"]
    with pytest.raises(js.ConfigError, match=r"indices \[3\] outside the 3 entries of 'energy'"):
        viz.series(run, "energy", systems=[3])


def test_a_per_system_run_draws_one_line_per_system(per_system_run):
    lines = {label: (x.tolist(), y.tolist()) for label, x, y in viz.series(per_system_run, "e")}
    assert lines == {
        "system 0": ([0, 1, 2, 3, 4, 5], [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]),
        "system 1": ([0, 2, 4], [1.0, 21.0, 41.0]),
        "system 2": ([3, 4, 5], [32.0, 42.0, 52.0]),
    }
    assert [label for label, _, _ in viz.series(per_system_run, "e", systems=[2])] == ["system 2"]


def test_series_refuses_fields_beyond_1d_and_bad_axes(run):
    with pytest.raises(js.ConfigError, match=r"'grid' has frames of shape \(6, 5\)"):
        viz.series(run, "grid")
    with pytest.raises(js.ConfigError, match="`x` must be 'step' or 'time'; got 'frame'"):
        viz.series(run, "e", x="frame")
    with pytest.raises(js.ConfigError, match="scalar frames"):
        viz.series(run, "e", systems=[0])
    with pytest.raises(KeyError, match="no field 'nope'"):
        viz.series(run, "nope")


# ------------------------------------------------------------------------------------ plot


def test_plot_series_writes_a_png_with_a_subplot_per_field(run, tmp_path):
    one = viz.plot_series(run, "energy", out=tmp_path / "one.png")
    two = viz.plot_series(run, ["energy", "e"], x="time", out=tmp_path / "two.png")
    for path in (one, two):
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 5000
    with Image.open(one) as a, Image.open(two) as b:
        assert a.size == (700, 360) and b.size == (700, 620)  # 1 + 2.6 inches per field, at 100 dpi


def test_plot_series_writes_field_png_in_the_current_directory_by_default(
    run, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = viz.plot_series(run, ["energy", "e"])
    assert (
        str(out) == "energy_e.png" and (tmp_path / "energy_e.png").read_bytes()[:8] == PNG_SIGNATURE
    )


def test_plot_series_refuses_an_unwritable_output(run, tmp_path):
    with pytest.raises(js.ConfigError, match="does not exist"):
        viz.plot_series(run, "e", out=tmp_path / "missing" / "e.png")
    with pytest.raises(js.ConfigError, match=r"must end in \.png"):
        viz.plot_series(run, "e", out=tmp_path / "e.jpg")
    with pytest.raises(js.ConfigError, match="no frames"):
        viz.plot_series(run[0:0], "e", out=tmp_path / "e.png")


# ----------------------------------------------------------------------------------- movie


def test_movie_writes_one_gif_frame_per_recorded_frame_at_the_given_fps(run, tmp_path):
    out = viz.movie(run, "grid", tmp_path / "grid.gif", fps=4)
    frames = gif_frames(out)
    assert len(frames) == STEPS and {duration for _, duration in frames} == {250}
    assert frames[0][0].shape == (420, 500, 3)
    assert not np.array_equal(frames[0][0], frames[-1][0])  # the image (and title) change


def test_movie_every_k_shows_every_kth_frame(run, tmp_path):
    assert (
        len(gif_frames(viz.movie(run, "grid", tmp_path / "g.gif", every=5, fps=20))) == 3
    )  # 0, 5, 10


def color_share(image, rgb, tol=6):
    return float(np.mean(np.all(np.abs(image.astype(int) - np.asarray(rgb)) <= tol, axis=-1)))


def test_movie_respects_vmin_and_vmax(run, tmp_path):
    import matplotlib

    lowest = np.round(255 * np.asarray(matplotlib.colormaps["viridis"](0.0)[:3])).astype(int)
    highest = np.round(255 * np.asarray(matplotlib.colormaps["viridis"](1.0)[:3])).astype(int)
    below = gif_frames(viz.movie(run, "grid", tmp_path / "below.gif", vmin=100.0, vmax=200.0))[5][0]
    above = gif_frames(viz.movie(run, "grid", tmp_path / "above.gif", vmin=-200.0, vmax=-100.0))[5][
        0
    ]
    # every value is below vmin (above vmax): the whole image has the colormap's lowest (highest)
    # color
    assert color_share(below, lowest) > 0.3 and color_share(below, highest) < 0.05
    assert color_share(above, highest) > 0.3 and color_share(above, lowest) < 0.05


def test_default_color_range_is_the_range_of_the_frames_read_in_blocks(run):
    view = run["grid"]
    assert viz.value_range(view) == pytest.approx((0.0, 11.29))
    assert len(list(viz.blocks(view, (), size=5))) == 3  # 5 + 5 + 2 frames
    assert viz.value_range(run[::5]["grid"]) == pytest.approx((0.0, 10.29))
    assert viz.value_range(run["cube"], (1,)) == (-11.0, 0.0)


def test_movie_title_shows_field_step_and_time():
    assert viz.frame_title("grid", np.int32(7), np.float32(3.5)) == "grid   step 7   t = 3.5"


def test_3d_frames_need_index_unless_the_leading_axis_has_size_one(run, tmp_path):
    assert len(gif_frames(viz.movie(run, "one", tmp_path / "one.gif", every=4))) == 3
    assert len(gif_frames(viz.movie(run, "cube", tmp_path / "cube.gif", index=1, every=4))) == 3
    with pytest.raises(
        js.ConfigError, match=r"'cube' has 3-d frames of shape \(2, 4, 5\); pass `index`"
    ):
        viz.movie(run, "cube", tmp_path / "c.gif")
    with pytest.raises(js.ConfigError, match="outside the leading axis"):
        viz.movie(run, "cube", tmp_path / "c.gif", index=2)
    with pytest.raises(js.ConfigError, match=r"'energy' has frames of shape \(3,\)"):
        viz.movie(run, "energy", tmp_path / "e.gif")


def test_mp4_without_ffmpeg_suggests_a_gif(run, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here
    with pytest.raises(js.ConfigError, match=r"needs ffmpeg on PATH.*\.gif"):
        viz.movie(run, "grid", tmp_path / "grid.mp4")
    assert not (tmp_path / "grid.mp4").exists()


def test_movie_checks_its_arguments(run, tmp_path):
    with pytest.raises(js.ConfigError, match=r"must end in \.gif or \.mp4"):
        viz.movie(run, "grid", tmp_path / "grid.avi")
    for fps in (0, 0.001, 1e-300, float("inf"), float("nan")):
        with pytest.raises(js.ConfigError, match=r"`fps` must be between 0.01 .* and 1000"):
            viz.movie(run, "grid", tmp_path / "g.gif", fps=fps)
    with pytest.raises(js.ConfigError, match="`vmin` must be a finite number; got nan"):
        viz.movie(run, "grid", tmp_path / "g.gif", vmin=float("nan"))
    with pytest.raises(js.ConfigError, match=r"`vmin` \(2.0\) must not be above `vmax` \(1.0\)"):
        viz.movie(run, "grid", tmp_path / "g.gif", vmin=2.0, vmax=1.0)
    with pytest.raises(js.ConfigError, match=r"color range \[1000.0, None\] given is outside"):
        viz.movie(run, "grid", tmp_path / "g.gif", vmin=1000.0)
    assert not (tmp_path / "g.gif").exists()
    with pytest.raises(js.ConfigError, match="`every` must be a positive int"):
        viz.movie(run, "grid", tmp_path / "g.gif", every=0)
    with pytest.raises(js.ConfigError, match="not a matplotlib colormap"):
        viz.movie(run, "grid", tmp_path / "g.gif", cmap="nope")
    with pytest.raises(js.ConfigError, match="does not exist"):
        viz.movie(run, "grid", tmp_path / "no" / "g.gif")


def test_gif_bytes_are_a_gif(run, tmp_path):
    data = viz.movie(run, "grid", tmp_path / "g.gif", every=6).read_bytes()
    assert data[:6] == b"GIF89a"
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 2


def test_log_axes_are_asked_for_by_field(tmp_path):
    store = tmp_path / "log.zarr"
    sink = js.ZarrSink.create(store, {"fmax": jnp.zeros(()), "energy": jnp.zeros(())}, chunk=4)
    for i in range(6):
        sink = sink.write({"fmax": jnp.float32(10.0**-i), "energy": jnp.float32(-i)}, step=i)
    js.close(sink)
    run = js.open(store)
    out = viz.plot_series(run, ["energy", "fmax"], out=tmp_path / "p.png", log=["fmax"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(js.ConfigError, match=r"`log` names \['x'\]"):
        viz.plot_series(run, ["energy"], out=tmp_path / "q.png", log=["x"])


# ------------------------------------------------------- the public plot and movie, CSV logs


def write_timeless_run(path):
    """A run of 6 frames recorded without `time=`: a 2-d field with dims (y, x), and a scalar."""
    example = {"phi": jnp.zeros((4, 6)), "e": jnp.float32(0)}
    sink = js.ZarrSink.create(
        path, example, chunk=4, field_config={"phi": js.FieldConfig(dims=("y", "x"))}
    )
    for i in range(6):
        frame = {"phi": jnp.full((4, 6), float(i)), "e": jnp.float32(i)}
        sink = sink.write(frame, step=i)
    js.close(sink)
    return path


def write_csv_log(path, per_system=False):
    """A CsvSink log of 8 rows: e = 2 step, v = (step, -step), time = step / 4."""
    if per_system:
        sink = js.CsvSink.create(path, {"e": jnp.zeros(2)}, block=4, per_system=True)
        for i in range(4):
            mask = jnp.asarray([True, i % 2 == 1])
            frame = {"e": jnp.asarray([i, 10 + i], jnp.float32)}
            sink = js.record(sink, step=i, time=jnp.float32(i), frame=frame, mask=mask)
    else:
        sink = js.CsvSink.create(path, {"e": jnp.float32(0), "v": jnp.zeros(2)}, block=4)
        for i in range(8):
            frame = {"e": jnp.float32(2 * i), "v": jnp.asarray([i, -i], jnp.float32)}
            sink = sink.write(frame, step=i, time=i / 4)
    js.close(sink)
    return path


@pytest.fixture(scope="module")
def timeless(tmp_path_factory):
    return js.open(write_timeless_run(tmp_path_factory.mktemp("viz") / "timeless.zarr"))


def lines_of(ax):
    return {
        line.get_label(): (line.get_xdata().tolist(), line.get_ydata().tolist())
        for line in ax.get_lines()
    }


def test_plot_returns_a_figure_titled_with_the_runs_name_not_its_path(run, tmp_path):
    figure = viz.plot(run, ["energy", "e"], x="time", out=tmp_path / "p.png")
    top, bottom = figure.axes
    assert top.get_title() == "run.zarr"  # not /tmp/.../run.zarr
    assert [top.get_ylabel(), bottom.get_ylabel(), bottom.get_xlabel()] == ["energy", "e", "time"]
    assert lines_of(bottom)["e"] == (
        [0.5 * s for s in range(STEPS)],
        [2.0 * s for s in range(STEPS)],
    )
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_SIGNATURE
    assert viz.plot(run, "e", title="relaxation").axes[0].get_title() == "relaxation"


def test_plot_opens_a_store_and_draws_every_plottable_field_by_default(run):
    figure = viz.plot(str(run.location.local_path))
    assert [ax.get_ylabel() for ax in figure.axes] == ["e", "energy"]  # not grid, cube, one
    assert figure.axes[0].get_title() == "run.zarr"


def test_plot_against_time_of_a_run_without_times_is_an_error(timeless, tmp_path):
    with pytest.raises(js.ConfigError, match=r"`x='time'`.*timeless.zarr has no times.*x='step'"):
        viz.plot(timeless, "e", x="time", out=tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()
    assert lines_of(viz.plot(timeless, "e").axes[0])["e"][1] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_plot_reads_the_csv_log_a_csv_sink_writes(tmp_path):
    log = write_csv_log(tmp_path / "log.csv")
    figure = viz.plot(log, x="time", out=tmp_path / "log.png")
    e_ax, v_ax = figure.axes
    assert e_ax.get_title() == "log.csv" and v_ax.get_xlabel() == "time"
    assert lines_of(e_ax) == {"e": ([i / 4 for i in range(8)], [2.0 * i for i in range(8)])}
    assert set(lines_of(v_ax)) == {"v[0]", "v[1]"}
    assert lines_of(v_ax)["v[1]"][1] == [-float(i) for i in range(8)]
    assert list(lines_of(viz.plot(log, "v[0]").axes[0])) == ["v[0]"]  # one column by name
    assert list(lines_of(viz.plot(log, "v", systems=[1]).axes[0])) == ["v[1]"]
    with pytest.raises(KeyError, match=r"no field 'w'; its fields are \['e', 'v'\]"):
        viz.plot(log, "w")


def test_a_torn_last_csv_line_is_left_out_and_a_foreign_csv_is_refused(tmp_path):
    log = write_csv_log(tmp_path / "log.csv")
    with open(log, "a") as f:
        f.write("8,2,16,8")  # a crash mid-line
    assert len(sources.read_csv_log(log)) == 8
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(js.StoreError, match="not a CsvSink log"):
        viz.plot(other)


def test_a_per_system_csv_log_is_one_line_per_system(tmp_path):
    log = write_csv_log(tmp_path / "ps.csv", per_system=True)
    assert lines_of(viz.plot(log, "e").axes[0]) == {
        "system 0": ([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]),
        "system 1": ([1.0, 3.0], [11.0, 13.0]),
    }


def test_movie_labels_its_axes_with_the_fields_dims(run, timeless, tmp_path, monkeypatch):
    made = []
    original = viz.movie_figure

    def spy(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(viz, "movie_figure", spy)
    viz.movie(timeless, "phi", tmp_path / "phi.gif")
    viz.movie(run, "cube", tmp_path / "cube.gif", index=1)
    (phi, _, phi_title), (cube, _, _) = made
    assert (phi.axes[0].get_xlabel(), phi.axes[0].get_ylabel()) == ("x", "y")
    assert phi_title.get_text() == "phi   step 5"  # the last frame; no time recorded, none shown
    assert (cube.axes[0].get_xlabel(), cube.axes[0].get_ylabel()) == ("cube_2", "cube_1")


def test_movie_shows_only_the_frames_in_the_time_range(run, tmp_path):
    # times are step / 2: [1, 3] holds steps 2..6
    assert len(gif_frames(viz.movie(run, "grid", tmp_path / "a.gif", t_start=1.0, t_end=3.0))) == 5
    assert len(gif_frames(viz.movie(run, "grid", tmp_path / "b.gif", t_start=4.0))) == 4
    assert len(gif_frames(viz.movie(run, "grid", tmp_path / "c.gif", t_end=1.0, every=2))) == 2
    assert len(viz.movie_frames(run, every=2, t_start=1.0, t_end=3.0)) == 3
    with pytest.raises(js.ConfigError, match=r"no frames with time >= 100.0; its times span"):
        viz.movie(run, "grid", tmp_path / "d.gif", t_start=100.0)


def test_movie_refuses_a_csv_log(tmp_path):
    log = write_csv_log(tmp_path / "log.csv")
    with pytest.raises(js.ConfigError, match="not of a CSV log"):
        viz.movie(log, "e", tmp_path / "e.gif")


def test_frame_title_leaves_out_a_missing_time():
    assert viz.frame_title("phi", np.int32(3), np.float32("nan")) == "phi   step 3"


def write_long_run(path, frames=150):
    """A run of `frames` 2-d frames in chunks of 10 frames (more than one block of a movie)."""
    sink = js.ZarrSink.create(path, {"phi": jnp.zeros((4, 3))}, chunk=10)
    for i in range(frames):
        sink = sink.write({"phi": jnp.full((4, 3), float(i))}, step=i, time=0.1 * i)
    js.close(sink)
    return path


@pytest.mark.parametrize("chunk", [1, 10])  # in the first block of 64 frames, or a later one
def test_a_read_error_part_way_leaves_an_existing_movie_as_it_was(tmp_path, chunk):
    store = write_long_run(tmp_path / "long.zarr")
    (store / "phi" / "c" / str(chunk) / "0" / "0").write_bytes(b"\x07" * 100)  # a damaged chunk
    out = tmp_path / "keep.gif"
    out.write_bytes(b"precious")
    with pytest.raises(js.StoreError):  # the read error, not one from the GIF writer
        viz.movie(js.open(store), "phi", out, vmin=0.0, vmax=1.0)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.gif", "long.zarr"]  # no leftovers


def test_a_movie_replaces_its_output_once_complete(run, tmp_path):
    out = tmp_path / "g.gif"
    out.write_bytes(b"old")
    viz.movie(run, "grid", out, every=6)
    assert len(gif_frames(out)) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["g.gif"]


def test_a_movie_of_empty_images_is_refused(tmp_path):
    sink = js.ZarrSink.create(tmp_path / "z.zarr", {"z": jnp.zeros((0, 3))}, chunk=4)
    for i in range(3):
        sink = sink.write({"z": jnp.zeros((0, 3))}, step=i)
    js.close(sink)
    with pytest.raises(js.ConfigError, match=r"images of shape \(0, 3\), which hold no values"):
        viz.movie(js.open(tmp_path / "z.zarr"), "z", tmp_path / "z.gif")
    assert not (tmp_path / "z.gif").exists()


def test_a_csv_log_with_a_value_that_is_not_a_number_or_not_text_is_refused(tmp_path):
    for name, body in (("abc", b"1,0.1,abc"), ("empty", b"1,0.1,")):
        log = tmp_path / f"{name}.csv"
        log.write_bytes(b"step,time,e\n0,0.0,1\n" + body + b"\n2,0.2,3\n")
        with pytest.raises(js.StoreError, match=r"holds a value that is not a number"):
            viz.plot(log)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(bytes(range(128, 256)) * 3)
    with pytest.raises(js.StoreError, match=r"bin.csv is not a CsvSink log: it is not text"):
        viz.plot(binary)


def test_systems_that_a_per_system_run_or_log_does_not_have_are_refused(per_system_run, tmp_path):
    with pytest.raises(js.ConfigError, match=r"indices \[7\] outside the \d+ systems of 'e'"):
        viz.plot(per_system_run, "e", systems=[7])
    log = write_csv_log(tmp_path / "ps.csv", per_system=True)
    with pytest.raises(
        js.ConfigError, match=r"indices \[7\] outside the 2 systems of 'e' \(0..1\)"
    ):
        viz.plot(log, "e", systems=[1, 7])


def test_messages_keep_the_case_of_the_store_path(tmp_path):
    sink = js.ZarrSink.create(tmp_path / "MyRun.zarr", {"e": jnp.float32(0)}, chunk=4)
    js.close(sink)
    with pytest.raises(js.ConfigError, match=r"^The run at .*/MyRun.zarr has no frames to plot"):
        viz.plot(tmp_path / "MyRun.zarr", "e")


def test_a_complex_field_is_refused_by_plot_and_movie_and_left_out_of_plot_all(tmp_path):
    """Both drew the real part only (a purely imaginary field as zeros), with numpy's
    ComplexWarning the only sign."""
    store = tmp_path / "waves.zarr"
    example = {"e": jnp.float32(0), "psi": jnp.zeros(4, jnp.complex64)}
    sink = js.ZarrSink.create(store, {**example, "img": jnp.zeros((2, 3, 3), jnp.complex64)})
    for i in range(3):
        frame = {"e": jnp.float32(i), "psi": jnp.full(4, 1j * i, jnp.complex64)}
        sink = sink.write({**frame, "img": jnp.full((2, 3, 3), 1j, jnp.complex64)}, step=i)
    js.close(sink)
    for draw in (
        lambda: viz.plot(store, "psi"),
        lambda: viz.movie(store, "img", tmp_path / "m.gif"),
    ):
        with pytest.raises(js.ConfigError, match=r"draws real values; '(psi|img)' is complex64"):
            draw()
    assert not (tmp_path / "m.gif").exists()
    assert [ax.get_ylabel() for ax in viz.plot(store).axes] == ["e"]
