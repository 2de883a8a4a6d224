"""Real filesystems for fault tests: a read-only directory and a small, fillable filesystem.

As root, permission bits do not stop writes, so a read-only directory is a tmpfs mounted ``ro``;
otherwise it is a directory with mode 0o500. A small filesystem is a size-limited tmpfs (root).
"""

import contextlib
import os
import pathlib
import re
import subprocess

import pytest


def _mount(target: pathlib.Path, options: str) -> None:
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip()}); the fault needs a real filesystem"
        )


@contextlib.contextmanager
def readonly_directory(parent: pathlib.Path):
    """A directory in which nothing can be created, even by root."""
    target = parent / "readonly"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o500)
        try:
            yield target
        finally:
            target.chmod(0o700)
        return
    _mount(target, "ro,size=1m")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@contextlib.contextmanager
def small_filesystem(parent: pathlib.Path, size: str):
    """A directory on a tmpfs of `size` (e.g. ``"2m"``) that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited filesystem needs root")
    target = parent / "small"
    target.mkdir()
    _mount(target, f"size={size}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def stored_bytes(path: pathlib.Path, *, identity: bool = True) -> dict[str, bytes]:
    """Every file under a local run, by relative path: what 'nothing changed' is checked against.
    Without `identity`, the run's random `run_id` is masked: what two equal runs share."""
    files = {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }
    if not identity:
        files = {
            k: re.sub(rb'"run_id":"[0-9a-f]{32}"', b'"run_id":""', v) for k, v in files.items()
        }
    return files
