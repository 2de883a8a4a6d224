import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsinks as js


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_bar_moves_at_flush_boundaries_only(tmp_path):
    out = Terminal()
    progress = js.Progress(total=20, file=out)
    assert progress.enabled
    log = js.CsvSink.create(
        tmp_path / "log.csv", {"e": jnp.zeros((), jnp.float32)}, block=8, progress=progress
    )

    @jax.jit
    def go(log):
        return jax.lax.scan(
            lambda s, i: (s.write({"e": i.astype(jnp.float32)}, step=i), None),
            log,
            jnp.arange(20, dtype=jnp.int32),
        )[0]

    log = go(log)
    assert progress.position == 16  # two flushes of 8: steps 0..15 done; the tail is staged
    js.close(log)
    assert progress.position == 20
    assert "20/20" in out.getvalue()


def test_off_when_not_a_terminal_and_never_moves_back():
    progress = js.Progress(total=10, file=io.StringIO())
    assert not progress.enabled
    progress.update_to(7)
    progress.update_to(3)
    assert progress.position == 7


def test_bad_progress_arguments():
    with pytest.raises(js.ConfigError, match="`total` to be a non-negative int"):
        js.Progress(total=-1)
    with pytest.raises(js.ConfigError, match="`disable` to be True, False or None .*; got 'x'"):
        js.Progress(disable="x")  # was taken as True
    with pytest.raises(js.ConfigError, match="`progress` must be a jaxsinks.Progress"):
        js.ZarrSink.create("memory://progress-bad", {"e": jnp.zeros(())}, progress=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        # a path gave tqdm's raw AttributeError (or, without disable=False, silently no bar)
        ({"file": "run.log"}, "`file` to be a text stream with a write method"),
        ({"desc": 5}, "`desc` to be a str; got 5"),  # tqdm's raw TypeError
        ({"total": True}, "`total` to be a non-negative int or None; got True"),
        ({"total": 2.0}, "`total` to be a non-negative int or None; got 2.0"),
    ],
)
def test_bad_progress_arguments_are_named_before_tqdm_sees_them(kwargs, match):
    with pytest.raises(js.ConfigError, match=match):
        js.Progress(disable=False, **kwargs)


def test_a_numpy_int_total_is_taken_as_an_int():
    progress = js.Progress(total=np.int64(10), file=Terminal())
    assert progress.total == 10 and type(progress.total) is int
