"""The Bazel BUILD file lists every module of the package and every test file.

Bazel cannot run here, so BUILD is parsed as the Python syntax Starlark is, and its targets are
compared with the files on disk.
"""

import ast
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _targets(kind: str) -> dict[str, list[str]]:
    tree = ast.parse((ROOT / "BUILD").read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == kind:
            kwargs = {k.arg: k.value for k in node.keywords}
            name = ast.literal_eval(kwargs["name"])
            assert name not in found, f"BUILD defines the {kind} {name!r} twice"
            found[name] = ast.literal_eval(kwargs["srcs"])
    return found


def test_every_package_module_is_in_a_py_library():
    listed = {src for srcs in _targets("py_library").values() for src in srcs}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "jaxsinks").rglob("*.py")}
    assert modules, "no modules found under jaxsinks/"
    assert sorted(modules - listed) == [], "modules missing from BUILD py_library srcs"
    helpers = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("*.py")
        if not p.name.startswith("test_")
    }
    assert sorted(listed - modules - helpers) == [], "BUILD lists files that do not exist"


def test_every_test_file_has_a_py_test():
    tests = _targets("py_test")
    listed = {src for srcs in tests.values() for src in srcs}
    files = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    assert sorted(files - listed) == [], "test files missing from BUILD py_test targets"
    assert sorted(listed - files) == [], "BUILD py_test targets name files that do not exist"
    for name, srcs in tests.items():
        assert len(srcs) == 1 and pathlib.Path(srcs[0]).stem == name, (name, srcs)


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_jax_is_not_capped():
    """No upper bound on jax/jaxlib: `pip install jaxsinks` keeps a user's newer JAX."""
    specs = {re.split(r"[<>=!~\[; ]", dep)[0]: dep for dep in _project()["dependencies"]}
    for name in ("jax", "jaxlib"):
        assert name in specs, f"pyproject.toml does not depend on {name}"
        assert "<" not in specs[name] and "==" not in specs[name], (
            f"{specs[name]!r} caps {name}: declare only a floor, and test the newest release "
            "in .ci/run."
        )


def test_the_demo_extra_has_what_the_demo_imports():
    """`make demo` installs only `.[demo]`: the plot (matplotlib) and the progress bar (tqdm)."""
    demo = {re.split(r"[<>=!~\[; ]", dep)[0] for dep in _project()["optional-dependencies"]["demo"]}
    assert {"matplotlib", "tqdm"} <= demo, demo
    assert "'.[demo]'" in (ROOT / "Makefile").read_text()
