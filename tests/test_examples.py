"""Every example runs, at a small size, as a real subprocess."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_oscillators_example():
    out = run_example("oscillators.py", "--replicas", "8", "--steps", "500")
    assert "trajectory: 50 frames of (8,)" in out
    assert "d(mean recorded energy)/d(damping)" in out
