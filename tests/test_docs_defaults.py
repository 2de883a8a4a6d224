"""The defaults the documentation states are the code's defaults.

Two sources, both checked against the code (``inspect.signature`` and module constants):

* the defaults table at the end of docs/guides/storage.md (call | argument | default | meaning):
  each default is a Python expression compared with the argument's default, and every argument
  with a default of a call in the table must have a row;
* `PHRASES`: sentences in other pages (and the table's "meaning" column) that state a default in
  prose, as regular expressions whose groups must equal the code's values. A phrase that no longer
  matches fails too: reword the page and the phrase here together.
"""

import inspect
import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsinks as js
from jaxsinks._io import cloud, tsio, writer, zarr_writer
from jaxsinks._sinks import csv_sink, host_buffer, zarr_sink

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE_PAGE = ROOT / "docs" / "guides" / "storage.md"
_ROW = re.compile(
    r"^\|\s*`(?P<call>[\w.]+)`\s*\|\s*`(?P<arg>\w+)`\s*\|\s*`(?P<default>[^`]+)`\s*\|"
)

MIB = 2**20


def seconds(value: str) -> float:
    """``"0.25s"`` (a TensorStore duration) -> 0.25."""
    return float(value.removesuffix("s"))


def defaults_table() -> list[tuple[str, str, str, str]]:
    """The rows ``(call, argument, default, line)`` of the "## Defaults" table of storage.md."""
    text = TABLE_PAGE.read_text()
    section = text.split("\n## Defaults\n", 1)
    assert len(section) == 2, f"{TABLE_PAGE} has no '## Defaults' section."
    rows = []
    for line in section[1].split("\n## ", 1)[0].splitlines():
        match = _ROW.match(line)
        if match:
            rows.append((match["call"], match["arg"], match["default"], line))
    return rows


def resolve(call: str):
    """``"ZarrSink.create"`` -> ``js.ZarrSink.create``."""
    obj = js
    for part in call.split("."):
        obj = getattr(obj, part)
    return obj


def code_defaults(call: str) -> dict[str, object]:
    params = inspect.signature(resolve(call)).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


ROWS = defaults_table()


def test_the_table_is_found_and_covers_the_sinks():
    calls = {call for call, *_ in ROWS}
    assert len(ROWS) >= 50
    for call in ("ZarrSink.create", "CsvSink.create", "HostBuffer.create", "DeviceBuffer.create"):
        assert call in calls, f"The defaults table of {TABLE_PAGE.name} has no rows for {call}."


@pytest.mark.parametrize("call, arg, default, line", ROWS, ids=[f"{c}-{a}" for c, a, *_ in ROWS])
def test_each_documented_default_is_the_codes_default(call, arg, default, line):
    actual = code_defaults(call)
    assert arg in actual, (
        f"{call} has no argument `{arg}` with a default, but the docs say:\n{line}"
    )
    documented = eval(default, {"js": js, "jnp": jnp, "np": np})  # noqa: S307 - our own docs
    assert type(documented) is type(actual[arg]) and documented == actual[arg], (
        f"{TABLE_PAGE.name} documents {call}({arg}={default}), but the code's default is "
        f"{actual[arg]!r}. Update the table (and the prose) or the code."
    )


def test_every_default_of_a_documented_call_is_in_the_table():
    documented: dict[str, set[str]] = {}
    for call, arg, *_ in ROWS:
        documented.setdefault(call, set()).add(arg)
    missing = {
        call: sorted(set(code_defaults(call)) - args)
        for call, args in documented.items()
        if set(code_defaults(call)) - args
    }
    assert not missing, f"Arguments with defaults missing from the defaults table: {missing}"


def test_a_wrong_default_in_the_table_would_fail():
    """The check above can fail: a Zstd(3) codec row is not the ZarrSink default."""
    actual = code_defaults("ZarrSink.create")["codec"]
    assert actual != eval("js.Zstd(3)", {"js": js})  # noqa: S307
    assert actual == js.Blosc("lz4", 5, "shuffle")


#: (page, regular expression, the code's values of its groups, as strings). Whitespace in a page
#: is collapsed to single spaces before matching, so phrases may wrap.
PHRASES = [
    (
        "docs/guides/storage.md",
        r"The default is about (\d+) MiB of frames, at most (\d+) frames",
        (zarr_sink.TARGET_BLOCK_BYTES // MIB, zarr_sink.MAX_DEFAULT_CHUNK),
    ),
    (
        "docs/guides/storage.md",
        r"`chunk` \| `None` \| about (\d+) MiB of frames per chunk, at most (\d+) frames",
        (zarr_sink.TARGET_BLOCK_BYTES // MIB, zarr_sink.MAX_DEFAULT_CHUNK),
    ),
    (
        "docs/guides/storage.md",
        r"`HostBuffer.create` \| `block` \| `None` \| about (\d+) MiB of frames",
        (host_buffer.TARGET_BLOCK_BYTES // MIB,),
    ),
    (
        "docs/guides/storage.md",
        r"`CsvSink.create` \| `block` \| `(\d+)`",
        (csv_sink.DEFAULT_BLOCK,),
    ),
    (
        "docs/guides/storage.md",
        r"`max_inflight_bytes` \| `256 \* 2\*\*20` \| (\d+) MiB",
        (writer.DEFAULT_MAX_INFLIGHT_BYTES // MIB,),
    ),
    (
        "docs/guides/storage.md",
        r"`retries` \| `(\d+)` \| attempts after the first, ([\d.]+) s to ([\d.]+) s apart",
        (cloud.DEFAULT_RETRIES, seconds(cloud.INITIAL_DELAY), seconds(cloud.MAX_DELAY)),
    ),
    (
        "docs/guides/storage.md",
        r"\| `\"(w-)\"` \(default\) \|",
        (code_defaults("ZarrSink.create")["mode"],),
    ),
    (
        "docs/concepts/flushing.md",
        r"By default `chunk` is about (\d+) MiB of frames \(at most (\d+)\)",
        (zarr_sink.TARGET_BLOCK_BYTES // MIB, zarr_sink.MAX_DEFAULT_CHUNK),
    ),
    (
        "docs/concepts/flushing.md",
        r"\(an argument of `ZarrSink.create`, (\d+) MiB by default\)",
        (writer.DEFAULT_MAX_INFLIGHT_BYTES // MIB,),
    ),
    (
        "docs/design.md",
        r"`max_inflight_bytes` \(default (\d+) MiB\)",
        (writer.DEFAULT_MAX_INFLIGHT_BYTES // MIB,),
    ),
    (
        "docs/reliability.md",
        r"`max_inflight_bytes` \(default (\d+) MiB\)",
        (writer.DEFAULT_MAX_INFLIGHT_BYTES // MIB,),
    ),
    (
        "docs/reliability.md",
        r"moves under (\d+) B/s for (\d+) s, then retries it, ([\d.]+) s to ([\d.]+) s apart",
        (
            tsio.STALL_BYTES_PER_SECOND,
            tsio.STALL_SECONDS,
            seconds(cloud.INITIAL_DELAY),
            seconds(cloud.MAX_DELAY),
        ),
    ),
    (
        "docs/reliability.md",
        r"the final `\"failed\"` status gets at most (\d+) s",
        (zarr_writer.FAILED_STATUS_TIMEOUT,),
    ),
    (
        "docs/reliability.md",
        r"With the defaults \(`retries=(\d+)`\)",
        (cloud.DEFAULT_RETRIES,),
    ),
    (
        "docs/guides/cloud.md",
        r"from ([\d.]+) s up to ([\d.]+) s, `retries` times \(default (\d+):",
        (seconds(cloud.INITIAL_DELAY), seconds(cloud.MAX_DELAY), cloud.DEFAULT_RETRIES),
    ),
    (
        "docs/guides/cloud.md",
        r"jaxsinks sets these to (\d+) B/s and (\d+) s",
        (tsio.STALL_BYTES_PER_SECOND, tsio.STALL_SECONDS),
    ),
    (
        "docs/guides/cloud.md",
        r"`js.close` waits at most (\d+) s more for the final `\"failed\"` status",
        (zarr_writer.FAILED_STATUS_TIMEOUT,),
    ),
    (
        "docs/guides/cloud.md",
        r"retries=(\d+), +# attempts after the first",
        (cloud.DEFAULT_RETRIES,),
    ),
    (
        "docs/concepts/schedules.md",
        r"\| `(None)` \(default\) \| every step \|",
        (code_defaults("ZarrSink.create")["every"],),
    ),
    (
        "docs/concepts/sinks.md",
        r"\| `\"(\w+)\"` \(default\) \| the first `capacity` frames \|",
        (code_defaults("DeviceBuffer.create")["overflow"],),
    ),
    (
        "docs/guides/host-memory.md",
        r"`\"(\w+)\"` \(the default:",
        (code_defaults("HostBuffer.create")["overflow"],),
    ),
    (
        "README.md",
        r"\*\*Overflow\*\*: `\"(\w+)\"` \(default\)",
        (code_defaults("ZarrSink.create")["overflow"],),
    ),
]


def page_text(page: str) -> str:
    return " ".join((ROOT / page).read_text().split())


def same(documented: str, actual: object) -> bool:
    if isinstance(actual, str):
        return documented == actual
    if actual is None:
        return documented == "None"
    return float(documented) == float(actual)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "page, pattern, values", PHRASES, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(PHRASES)]
)
def test_each_documented_phrase_states_the_codes_default(page, pattern, values):
    matches = list(re.finditer(pattern, page_text(page)))
    assert matches, (
        f"{page} no longer says /{pattern}/. If the page was reworded, update PHRASES in "
        "tests/test_docs_defaults.py to check the new wording."
    )
    if values is None:
        return
    for match in matches:
        bad = [(d, a) for d, a in zip(match.groups(), values, strict=True) if not same(d, a)]
        assert not bad, (
            f"{page} says {match.group(0)!r}, but the code's values are {values}: "
            f"(documented, code) pairs that differ: {bad}."
        )


@pytest.mark.parametrize("page", ["docs/guides/storage.md", "docs/guides/compression.md"])
def test_the_default_codec_phrases(page):
    match = re.search(r"the default (?:codec )?is `(Blosc\([^`]*\))`", page_text(page))
    assert match, f"{page} no longer names the default codec as `Blosc(...)`."
    documented = eval(match.group(1), {"Blosc": js.Blosc})  # noqa: S307 - our own docs
    assert documented == code_defaults("ZarrSink.create")["codec"]


def test_the_readme_names_the_default_codec():
    match = re.search(r"codecs `Blosc` \(default: (\w+) \+ (\w+)\)", page_text("README.md"))
    assert match, "README.md no longer says which codec is the default."
    codec = code_defaults("ZarrSink.create")["codec"]
    assert (match.group(1), match.group(2)) == (codec.cname, codec.shuffle)


def test_no_page_calls_zstd_the_default_codec():
    """The drift this file was written for: a page said the default codec was Zstd(3)."""
    pages = [*ROOT.glob("docs/**/*.md"), ROOT / "README.md"]
    said = [
        str(p.relative_to(ROOT))
        for p in pages
        if re.search(
            r"Zstd\(\w*\)` \(the default|default(?: codec)? is `?(?:js\.)?Zstd",
            " ".join(p.read_text().split()),
        )
    ]
    assert not said, f"These pages call Zstd the default codec, which it is not: {said}"
