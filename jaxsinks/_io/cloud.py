"""Object-store locations with explicit options: `s3` and `gcs` (pure, except for credentials).

Both return a `Location` accepted as ``store=`` anywhere a path or URL is (``ZarrSink.create``,
``jaxsinks.open``, ``Campaign.create``). Its ``repr`` and every message name it as
``s3://bucket/path``: never an endpoint's user info, never a secret.

Explicit S3 keys never enter a TensorStore spec (TensorStore's specs have no member for them, and a
spec ends up in error texts), and no file holding them outlives the process. TensorStore reads keys
only from the environment (one set per process) or from an AWS credentials file, so each distinct
set of keys is written to an anonymous in-memory file (Linux ``memfd_create``, mode 0600) that
the spec names as a ``"profile"`` credentials source by its ``/proc/<pid>/fd/<n>`` path: it is
on no file system, and the kernel frees it when the process ends, however it ends (SIGKILL
included). Only where there is no ``memfd_create`` (macOS, Windows) is it a file in a private
temporary directory ``jaxsinks-aws-<pid>-*`` (mode 0700, file 0600), removed at exit; a process
killed before its exit handlers ran leaves one behind, which the next process that writes keys
removes (any such directory whose process no longer runs).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from typing import Any

from .._core.errors import ConfigError
from .._core.types import CREDENTIAL_SOURCES, CredentialSource, as_int
from .location import Location, bucket_url, gcs_spec, s3_spec

#: Request attempts after the first: a dead server surfaces in seconds, not TensorStore's minutes
#: (32 retries with delays up to 32 s). More than the AWS SDKs' standard mode (2). Raise it for
#: heavy concurrent writes to a real bucket (S3 answers 503 SlowDown when it wants clients to wait).
DEFAULT_RETRIES = 4
#: The first and the largest delay between attempts (exponential backoff in between).
INITIAL_DELAY = "0.25s"
MAX_DELAY = "4s"

_KEYS = ("access_key_id", "secret_access_key", "session_token")
_PROFILE = "jaxsinks"


def request_retries(retries: int) -> dict[str, Any]:
    """The TensorStore retry resource (``s3_request_retries`` / ``gcs_request_retries``)."""
    return {"max_retries": retries, "initial_delay": INITIAL_DELAY, "max_delay": MAX_DELAY}


def s3(
    path: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    credentials: CredentialSource | dict[str, str] | None = None,
    requester_pays: bool = False,
    retries: int = DEFAULT_RETRIES,
) -> Location:
    """An S3 (or S3-compatible) store, with its options given explicitly.

    Args:
        path: ``"s3://bucket/prefix"`` or ``"bucket/prefix"``: the run's directory.
        endpoint: an ``http(s)://`` URL of an S3-compatible server (MinIO, moto, Ceph, ...).
            By default ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` if set, else AWS.
        region: the region used in request signatures. By default ``AWS_REGION`` or
            ``AWS_DEFAULT_REGION`` if set; without an endpoint AWS finds the bucket's region.
        credentials: where keys come from. None (default): the environment variables if
            ``AWS_ACCESS_KEY_ID`` is set, else the AWS default chain (profile files, instance
            metadata). ``"environment"``, ``"anonymous"`` or ``"default"``: that source. A dict
            ``{"access_key_id": ..., "secret_access_key": ..., "session_token": ...}`` (token
            optional): these keys, kept out of every spec, message and attribute (see the module
            docstring).
        requester_pays: allow requests to a bucket with Requester Pays enabled.
        retries: request attempts after the first, with exponential backoff from 0.25 s up to
            4 s: with the default, a server that refuses connections fails a request in about 4 s
            (see the cloud guide for a server that hangs).

    Returns:
        A `Location` to pass as ``store=``.
    """
    bucket, prefix = bucket_url("s3", path, "`path`")
    _check_optional_str("js.s3", "region", region)
    if not isinstance(requester_pays, bool):
        raise ConfigError(
            f"`js.s3` needs `requester_pays` to be a bool; got {type(requester_pays).__name__} "
            f"{requester_pays!r}."
        )
    spec = s3_spec(
        bucket, prefix, endpoint=endpoint, region=region, credentials=_aws_credentials(credentials)
    )
    if requester_pays:
        spec["requester_pays"] = True
    spec["s3_request_retries"] = request_retries(_check_retries(retries))
    return Location(spec)


def gcs(path: str, *, user_project: str | None = None, retries: int = DEFAULT_RETRIES) -> Location:
    """A Google Cloud Storage store, with its options given explicitly.

    Credentials are Google's application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``
    or ``gcloud auth application-default login``). TensorStore takes another server (an emulator)
    only from the ``TENSORSTORE_GCS_HTTP_URL`` environment variable, set before the first request.

    Args:
        path: ``"gs://bucket/prefix"`` or ``"bucket/prefix"``: the run's directory.
        user_project: the project billed for requests to a Requester Pays bucket.
        retries: request attempts after the first, with exponential backoff from 0.25 s to 4 s.

    Returns:
        A `Location` to pass as ``store=``.
    """
    bucket, prefix = bucket_url("gs", path, "`path`")
    _check_optional_str("js.gcs", "user_project", user_project)
    spec = gcs_spec(bucket, prefix)
    if user_project:
        spec["gcs_user_project"] = {"project_id": user_project}
    spec["gcs_request_retries"] = request_retries(_check_retries(retries))
    return Location(spec)


def _check_retries(retries: int) -> int:
    number = as_int(retries)
    if number is None or number < 1:
        raise ConfigError(
            f"`retries` must be an int >= 1 (request attempts after the first); got {retries!r}."
        )
    return number


def _check_optional_str(owner: str, name: str, value: Any) -> None:
    """A ConfigError unless `value` is a string or None (``""`` means not set, like None)."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(
            f"`{owner}` needs `{name}` to be a string or None; got {type(value).__name__} "
            f"{value!r}."
        )


def _aws_credentials(
    credentials: CredentialSource | dict[str, str] | None,
) -> dict[str, Any] | None:
    """The TensorStore ``aws_credentials`` member for `credentials` (None: `s3_spec`'s default,
    from the environment)."""
    if credentials is None:
        return None
    if isinstance(credentials, str):
        if credentials not in CREDENTIAL_SOURCES:
            raise ConfigError(
                f"`credentials` must be one of {list(CREDENTIAL_SOURCES)} or a dict of keys; "
                "got another string (not shown here: it could be a secret). Pass keys as "
                "{'access_key_id': ..., 'secret_access_key': ...}."
            )
        return {"type": credentials}
    if not isinstance(credentials, dict):
        raise ConfigError(
            "`credentials` must be None, a string or a dict with 'access_key_id' and "
            f"'secret_access_key'; got {type(credentials).__name__}."
        )
    unknown = sorted(set(map(str, credentials)) - set(_KEYS))
    missing = [k for k in _KEYS[:2] if not credentials.get(k)]
    if unknown or missing:
        raise ConfigError(
            f"`credentials` takes the keys {list(_KEYS)} (session_token optional); "
            f"missing {missing}, unknown {unknown}."
        )
    values = tuple(credentials.get(k) or "" for k in _KEYS)
    if not all(isinstance(v, str) and v.isprintable() for v in values):
        raise ConfigError("`credentials` values must be single-line strings (not shown here).")
    return _profile_source(values)


class _CredentialFiles:
    """Private AWS credentials files, one per distinct set of keys and process (see the module
    docstring): in-memory files where the system has them, else files removed at exit."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every file: at start, and in a forked child, which makes its own (the parent's may
        go away first, and a lock held by another of the parent's threads stays held)."""
        self._lock = threading.Lock()
        self._fds: list[int] = []  # kept open for the life of the process: they are the files
        self._dir: str | None = None
        self._config: str | None = None
        self._sources: dict[tuple[str, ...], dict[str, Any]] = {}

    def source(self, keys: tuple[str, ...]) -> dict[str, Any]:
        with self._lock:
            if keys not in self._sources:
                lines = [
                    f"[{_PROFILE}]",
                    f"aws_access_key_id = {keys[0]}",
                    f"aws_secret_access_key = {keys[1]}",
                ]
                if keys[2]:
                    lines.append(f"aws_session_token = {keys[2]}")
                number = len(self._sources)
                if self._config is None:
                    self._config = self._private(f"config-{number}", f"[profile {_PROFILE}]\n")
                creds = self._private(f"credentials-{number}", "\n".join(lines) + "\n")
                self._sources[keys] = {
                    "type": "profile",
                    "profile": _PROFILE,
                    "credentials_file": creds,
                    "config_file": self._config,
                }
            return dict(self._sources[keys])

    def _private(self, name: str, text: str) -> str:
        """The path of a new file only this user can read, holding `text`."""
        if USE_MEMFD:
            path = _memory_file(f"jaxsinks-aws-{name}", text, self._fds)
            if path is not None:
                return path
        if self._dir is None:
            remove_leftovers()
            self._dir = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")  # mode 0700
            atexit.register(_remove, self._dir, os.getpid())
        path = os.path.join(self._dir, name)
        _write_private(path, text)
        return path


#: Whether to keep keys in in-memory files (Linux); tests set it False to check the fallback.
USE_MEMFD = hasattr(os, "memfd_create")
_DIR_PREFIX = "jaxsinks-aws-"


def _memory_file(name: str, text: str, fds: list[int]) -> str | None:
    """An anonymous in-memory file (mode 0600) holding `text`, by a path other code can open for
    as long as this process lives; None if the system cannot give one."""
    try:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        path = f"/proc/{os.getpid()}/fd/{fd}"
        with open(path, encoding="utf-8") as f:  # /proc may be missing or of another pid namespace
            if f.read() != text:
                raise OSError("not this process's file")
    except OSError:
        os.close(fd)
        return None
    fds.append(fd)
    return path


def remove_leftovers(root: str | None = None) -> list[str]:
    """Remove the credential directories of processes that no longer run (killed before their exit
    handlers ran) from `root` (default: the temporary directory); returns those removed."""
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(_DIR_PREFIX):
            continue
        pid = name[len(_DIR_PREFIX) :].split("-", 1)[0]
        path = os.path.join(root, name)
        try:
            if not pid.isdigit() or os.stat(path).st_uid != os.getuid() or _alive(int(pid)):
                continue
        except (OSError, AttributeError):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(directory: str, owner: int) -> None:
    """Remove `directory` at exit, in the process that made it (not in a forked child)."""
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


_FILES = _CredentialFiles()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_FILES.reset)


def _profile_source(keys: tuple[str, ...]) -> dict[str, Any]:
    return _FILES.source(keys)
