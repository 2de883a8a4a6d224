"""The documentation: every public name is in the API reference and has a docstring, the code of
every guide runs as written, and the site builds with ``mkdocs build --strict``.

Runnable code is in fenced blocks opened with exactly ```` ```python ````. The blocks of one page
run in order in one namespace (a page builds up its example), in a fresh temporary directory, and
must close every sink they open. A block that is only illustrative is fenced
```` ```{.python .no-run} ```` (rendered as Python, not run) or ```` ```text ````.
"""

import dataclasses
import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

import jaxsinks
from jaxsinks._io import writer as _writer

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_PAGE = DOCS / "api.md"

#: The pages whose Python blocks must run; concepts and guides added later are picked up too.
RUNNABLE_PAGES = sorted(
    str(p.relative_to(DOCS))
    for p in [
        DOCS / "index.md",
        DOCS / "getting-started.md",
        *DOCS.glob("concepts/*.md"),
        *DOCS.glob("guides/*.md"),
    ]
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>.*)$")
_API_ENTRY = re.compile(r"^:::[ \t]+jaxsinks\.(?P<name>\w+)[ \t]*$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    info: str  # the fence's info string: "python", "text", "{.python .no-run}", ...
    line: int  # the 1-based line of the page where the code starts
    code: str


def public_names() -> list[str]:
    """The public API: ``jaxsinks.__all__``."""
    return sorted(jaxsinks.__all__)


def test_all_names_what_import_jaxsinks_exports():
    """``__all__`` lists every public attribute but the internals kept for one release, and
    each entry exists."""
    exported = {
        name
        for name in dir(jaxsinks)
        if not name.startswith("_")
        and name != "annotations"
        and not inspect.ismodule(getattr(jaxsinks, name))
    }
    assert exported - set(jaxsinks.__all__) == {"StreamSink", "FrameSpec", "Field"}
    assert set(jaxsinks.__all__) <= exported


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block of a markdown page in order, including indented ones (admonitions)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, ticks = opening["indent"], opening["ticks"]
        body, j = [], i + 1
        while j < len(lines) and lines[j].strip() != ticks:
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"The code fence opened on line {i + 1} is never closed.")
        blocks.append(CodeBlock(opening["info"].strip(), i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def open_writers() -> set[int]:
    """The ids of the host writers (streaming sinks) open in this process."""
    return {writer.id for writer in _writer.REGISTRY.live()}


def test_code_blocks_are_found_with_their_lines():
    page = (
        "text\n\n```python\nx = 1\n```\n\n"
        "    ```{.python .no-run}\n    y = 2\n    ```\n"
        "```text\nz\n```\n"
    )
    blocks = code_blocks(page)
    assert [(b.info, b.line, b.code) for b in blocks] == [
        ("python", 4, "x = 1\n"),
        ("{.python .no-run}", 8, "y = 2\n"),
        ("text", 11, "z\n"),
    ]
    with pytest.raises(AssertionError, match="line 1 is never closed"):
        code_blocks("```python\nx = 1\n")


def test_every_public_name_is_in_the_api_reference():
    documented = _API_ENTRY.findall(API_PAGE.read_text())
    duplicated = sorted({n for n in documented if documented.count(n) > 1})
    missing = sorted(set(public_names()) - set(documented))
    unknown = sorted(set(documented) - set(public_names()))
    assert not missing, (
        f"Public names missing from docs/api.md: {missing}. Add a `::: jaxsinks.NAME` block for "
        "each, under the group it belongs to."
    )
    assert not unknown, f"docs/api.md documents names that jaxsinks does not export: {unknown}."
    assert not duplicated, f"docs/api.md documents these names more than once: {duplicated}."


def test_every_public_name_has_a_docstring():
    undocumented = []
    for name in public_names():
        obj = getattr(jaxsinks, name)
        if not (inspect.isclass(obj) or callable(obj)):
            continue
        # A class's own docstring, not an inherited one; a dataclass without one gets its signature.
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not doc or not doc.strip() or doc.startswith(f"{obj.__name__}("):
            undocumented.append(name)
    assert not undocumented, f"Public names without a docstring: {undocumented}."


def test_the_promised_pages_exist_and_run():
    promised = [
        "index.md",
        "getting-started.md",
        "concepts/sinks.md",
        "concepts/schedules.md",
        "concepts/flushing.md",
        "concepts/transformations.md",
        "guides/differentiable.md",
        "guides/ensembles.md",
        "guides/storage.md",
    ]
    missing = [page for page in promised if page not in RUNNABLE_PAGES]
    assert not missing, f"These documentation pages are missing: {missing}."


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_guide_code_blocks_run(page, tmp_path, monkeypatch):
    path = DOCS / page
    blocks = code_blocks(path.read_text())
    bad = [b.line - 1 for b in blocks if b.info.startswith("python") and b.info != "python"]
    assert not bad, (
        f"docs/{page} has code fences on lines {bad} whose info string starts with 'python' but is "
        "not exactly 'python', which Markdown does not render as code. Fence illustrative Python "
        "with ```{.python .no-run} and runnable Python with ```python."
    )
    runnable = [b for b in blocks if b.info == "python"]
    assert runnable, f"docs/{page} has no runnable ```python block."
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs.{page}"}
    before = open_writers()
    for block in runnable:
        source = "\n" * (block.line - 1) + block.code  # so tracebacks give the page's line numbers
        exec(compile(source, str(path), "exec"), namespace)  # noqa: S102
    left_open = open_writers() - before
    assert not left_open, (
        f"docs/{page} leaves {len(left_open)} sink(s) open: a page must close every sink it "
        "creates, with js.close."
    )


README_SIMULATION = """
from typing import NamedTuple

class State(NamedTuple):
    x: jax.Array
    e: jax.Array
    t: jax.Array
    n: jax.Array
    converged: jax.Array

def simulate_step(s):  # system k converges in the step recorded as step 10 * k, and stays so
    n = s.n + 1
    return State(s.x + 1.0, s.e - 1.0, s.t + 0.01, n, n > 10 * jnp.arange(64))

state0 = State(jnp.zeros((64, 38, 3)), jnp.zeros(64), jnp.float32(0), jnp.int32(0),
               jnp.zeros(64, bool))
"""


def test_the_readme_example_runs_with_a_simulation_whose_systems_stay_converged(
    tmp_path, monkeypatch
):
    """Its per-system DeviceBuffer lacked once=True: recorded at every step while a system stayed
    converged, it overflowed and close raised SinkOverflowError."""
    first = next(b for b in code_blocks((ROOT / "README.md").read_text()) if b.info == "python")
    monkeypatch.chdir(tmp_path)
    imports, rest = first.code.split("\n\n", 1)
    namespace: dict = {}
    exec(imports + README_SIMULATION + rest, namespace)  # noqa: S102
    best, run = namespace["best"], namespace["run"]
    frames = best.read()
    assert len(frames) == 64 and sorted(frames.systems.tolist()) == list(range(64))
    assert (frames.steps == 10 * frames.systems).all()  # each at the step it first converged
    assert run.steps.tolist() == list(range(0, 5000, 10))


def test_mkdocs_builds_strict(tmp_path):
    needed = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    missing = [name for name in needed if _find_spec(name) is None]
    if missing:
        pytest.skip(
            f"The docs extra is not installed (no {missing}): `make docs` (run by .ci/run) "
            "installs it and builds the site."
        )
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's notice about MkDocs 2.0
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        str(ROOT / "mkdocs.yml"),
        "--site-dir",
        str(site),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (site / "api" / "index.html").read_text()
    unrendered = [n for n in public_names() if f'id="jaxsinks.{n}"' not in api]
    assert not unrendered, f"mkdocstrings rendered no entry for {unrendered} in the API reference."
    unbuilt = [page for page in RUNNABLE_PAGES if not _built_page(site, page).exists()]
    assert not unbuilt, f"mkdocs built no HTML for {unbuilt}."


def _built_page(site: pathlib.Path, page: str) -> pathlib.Path:
    """Where mkdocs writes `page`: ``a/b.md`` at ``a/b/index.html``, ``index.md`` at the root."""
    stem = page.removesuffix(".md")
    return site / "index.html" if stem == "index" else site / stem / "index.html"


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
