"""Plots and movies of recorded runs (jaxsinks._tools.viz): lines drawn, PNGs and GIFs written."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from run_helpers import PNG_SIGNATURE, STEPS, frame_at, write_per_system_run, write_run  # noqa: F401

import jaxsinks as js
from jaxsinks._tools import viz


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
    with pytest.raises(js.ConfigError, match="`fps` must be positive"):
        viz.movie(run, "grid", tmp_path / "g.gif", fps=0)
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
