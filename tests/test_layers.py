"""The package's layers (docs/architecture.md), checked on the source: the device core stays pure
JAX, JAX internals stay in the host-call module, importing jaxsinks changes nothing around it, and
the tools stay off the library's import path.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxsinks"
CORE = PACKAGE / "_core"
#: What the device core may import besides itself: JAX, numpy and the standard library's pure parts.
CORE_ALLOWED = {
    "jax",
    "numpy",
    "chex",
    "__future__",
    "abc",
    "collections",
    "dataclasses",
    "enum",
    "functools",
    "itertools",
    "math",
    "operator",
    "re",
    "typing",
    "warnings",
    "types",
    "numbers",
    "contextlib",
    "inspect",
}


def _imports(path: pathlib.Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every module `path` imports (module level or inside functions), resolved to dotted names."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]).split(".")
    found = []
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _run_at_import(tree: ast.Module):
    """The statements of a module that run when it is imported (not inside functions)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _environment_writes(source: str) -> list[int]:
    writes = []
    for node in _run_at_import(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if owner == "os.environ" and node.func.attr in ("setdefault", "update", "pop", "clear"):
                writes.append(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        if isinstance(node, ast.Delete):
            targets = node.targets
        writes += [
            t.lineno
            for t in targets
            if isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ"
        ]
    return writes


def _modules(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(root.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(CORE), ids=lambda p: p.name)
def test_core_imports_only_jax_numpy_and_itself(path):
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top == "jaxsinks":
            assert module.startswith("jaxsinks._core."), (
                f"{path.name}:{line} imports {module}: the device core must not import the sinks, "
                "the I/O layer, reading or the tools"
            )
        else:
            assert top in CORE_ALLOWED, (
                f"{path.name}:{line} imports {module}: the device core is pure JAX (no threads, "
                "files, TensorStore or network)"
            )


#: The layers above the I/O layer: they reach files, threads and stores only through `_io`.
ABOVE_IO = ["_sinks", "_read", "campaign", "training"]
#: Modules that start threads, take locks, or touch files, processes or stores themselves.
IO_MODULES = {
    "threading",
    "concurrent",
    "multiprocessing",
    "queue",
    "asyncio",
    "fcntl",
    "zipfile",
    "tarfile",
    "shutil",
    "tempfile",
    "subprocess",
    "tensorstore",
    "http",
    "urllib",
}
#: Calls that open, write, move or delete files: the builtin `open`, `os.<name>`, `path.<name>()`.
OS_FILE_CALLS = {"open", "write", "read", "fsync", "close", "remove", "unlink", "rename", "replace"}
OS_FILE_CALLS |= {"ftruncate", "makedirs", "mkdir", "rmdir"}
#: (Not `rename` or `replace`: strings and datasets have those too.)
PATH_FILE_CALLS = {"write_text", "write_bytes", "read_text", "read_bytes", "unlink", "mkdir"}
PATH_FILE_CALLS |= {"rmdir", "touch"}


def _file_calls(source: str) -> list[int]:
    """The lines of `source` that call the builtin `open`, a file function of `os`, or a file
    method of a path (not a function of an imported module, such as `tsio.read_bytes`)."""
    tree = ast.parse(source)
    modules = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            lines.append(node.lineno)
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if owner == "os" and func.attr in OS_FILE_CALLS:
                lines.append(node.lineno)
            elif owner not in modules and func.attr in PATH_FILE_CALLS:
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "path",
    [p for layer in ABOVE_IO for p in _modules(PACKAGE / layer)],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_threads_locks_and_files_only_in_the_io_layer(path):
    """docs/architecture.md: anything with a thread, lock, file or store call is in `_io/`; the
    sinks, the reader, campaigns and training sets call it."""
    where = path.relative_to(PACKAGE)
    for line, module in _imports(path):
        assert module.split(".")[0] not in IO_MODULES, (
            f"{where}:{line} imports {module}: threads, locks, files and stores belong in _io/"
        )
    assert not _file_calls(path.read_text()), (
        f"{where}:{_file_calls(path.read_text())} calls file functions: they belong in _io/"
    )


def test_the_checkers_see_what_they_forbid():
    """The checks can fail: a core module importing TensorStore or the I/O layer, and a module
    writing the environment at import, are seen; a write inside a function is not an import."""
    fake = CORE / "probe.py"
    imports = [m for _, m in _imports(fake, "import tensorstore\nfrom ..\x5fio import writer\n")]
    assert imports == ["tensorstore", "jaxsinks._io.writer"]
    source = (
        "import os\nos.environ['A'] = '1'\nos.environ.setdefault('B', '2')\n"
        "if True:\n    os.environ.update(C='3')\n"
        "def later():\n    os.environ['D'] = '4'\n"
    )
    assert sorted(_environment_writes(source)) == [2, 3, 5]
    files = "from . import tsio\nopen(p)\nos.fsync(fd)\npath.write_bytes(b)\n"
    files += "os.path.join(a)\njs.open(p)\ntsio.read_bytes(s, k)\n"
    assert _file_calls(files) == [2, 3, 4]


def test_jax_internals_only_in_the_host_call_module():
    users = sorted(
        f"{p.relative_to(PACKAGE)}:{line}"
        for p in _modules(PACKAGE)
        for line, module in _imports(p)
        if module.startswith("jax._src")
    )
    assert users and all(u.startswith("_io/callback.py:") for u in users), users


def test_no_environment_changes_at_import():
    """No statement that runs at import assigns os.environ (an object store sets TensorStore's
    stall timeouts when it is first opened: tests/test_cloud.py)."""
    writers = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in _modules(PACKAGE)
        for line in _environment_writes(path.read_text())
    ]
    assert writers == []


def test_import_leaves_tools_and_environment_alone():
    code = (
        "import os, sys; before = dict(os.environ); import jaxsinks, jaxsinks.campaign, "
        "jaxsinks.training; "
        "loaded = sorted(m for m in sys.modules if m.startswith(('jaxsinks._tools', "
        "'jaxsinks.demo', 'matplotlib', 'tqdm')) or m == 'boto3'); "
        "changed = sorted(k for k in set(before) | set(os.environ) "
        "if before.get(k) != os.environ.get(k)); print(loaded, changed)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORSTORE_CURL")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    assert out == "[] []"


def test_old_top_level_names_stay():
    import jaxsinks as js
    import jaxsinks.campaign
    import jaxsinks.training

    assert js.Campaign is jaxsinks.campaign.Campaign
    assert js.RunConfig is jaxsinks.campaign.RunConfig
    assert js.RunEntry is jaxsinks.campaign.RunEntry
    assert js.export_training is jaxsinks.training.export_training
    assert js.TrainingSet is jaxsinks.training.TrainingSet
    assert js.Sample is jaxsinks.training.Sample
