"""Where a run is stored: a path, a URL or a TensorStore kvstore spec, as kvstore JSON (pure).

Accepted forms:

* a local path (``"runs/lj.zarr"`` or a `pathlib.Path`): the default, TensorStore's ``file`` driver;
* ``file:///abs/path``, ``memory://name``, ``s3://bucket/prefix``, ``gs://bucket/prefix``;
* a TensorStore kvstore spec dict, e.g. ``{"driver": "s3", "bucket": ..., "path": ...}``.

Descriptions used in messages never include credentials or endpoints' query strings.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import re
from typing import Any
from urllib.parse import urlsplit

from .._core.errors import ConfigError

SCHEMES = ("file", "memory", "s3", "gs")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")
#: What may be shown of a host or bucket name in a message: nothing that could be user info.
_HOST = re.compile(r"^[A-Za-z0-9._\-]+$")
#: S3 (3-63; legacy buckets with capitals) and GCS (3-222, with dots) bucket names.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,220}[A-Za-z0-9]$")
#: TensorStore's ``aws_credentials`` source types.
AWS_CREDENTIAL_TYPES = ("default", "anonymous", "environment", "imds", "profile", "ecs")


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed store location: a TensorStore kvstore spec whose path is a directory (ends in /)."""

    kvstore: dict[str, Any]

    def child(self, name: str) -> dict[str, Any]:
        """The kvstore spec of the node `name` (a ``/``-separated relative path) under this one."""
        spec = copy.deepcopy(self.kvstore)
        spec["path"] = spec.get("path", "") + name.strip("/") + "/"
        return spec

    @property
    def driver(self) -> str:
        return str(self.kvstore.get("driver"))

    @property
    def local_path(self) -> pathlib.Path | None:
        """The directory on local disk, for the file driver; else None."""
        if self.driver != "file":
            return None
        return pathlib.Path(self.kvstore["path"])

    def __str__(self) -> str:
        return describe(self.kvstore)

    def __repr__(self) -> str:  # the spec can name credentials sources and endpoints: not shown
        return f"Location({describe(self.kvstore)!r})"


def parse(store: Any) -> Location:
    """Parse `store` (a path, a URL or a kvstore spec dict) into a `Location`.

    URLs are read literally (no percent-decoding): ``scheme://`` then, for ``s3://`` and
    ``gs://``, a bucket and a path. User info (``key:secret@``) is refused wherever it is and
    however the secret is spelled (with ``/``, ``@`` or ``:`` in it), and never shown: any ``@``
    in a ``memory://``, ``s3://`` or ``gs://`` URL, or in a ``file://`` URL that names a host, is
    taken as user info. Query strings and fragments are refused (never dropped), unshown; so are
    '.' and '..' segments in an object store's path (local paths are resolved instead).
    """
    if isinstance(store, Location):
        return store
    if isinstance(store, dict):
        return Location(_from_dict(store))
    if isinstance(store, os.PathLike):
        return Location(_file(os.fspath(store)))
    if not isinstance(store, str) or not store:
        raise ConfigError(
            "`store` must be a path, a URL (file://, memory://, s3://, gs://) or a TensorStore "
            f"kvstore spec dict; got {type(store).__name__} {_short(store)}."
        )
    if "://" not in store:
        return Location(_file(store))
    given, rest = store.split("://", 1)
    scheme = given.lower()
    if scheme not in SCHEMES:
        shown = (
            f"the unsupported scheme '{scheme}://'"
            if _SCHEME.match(scheme)
            else "no valid URL scheme before '://' (not shown here)"
        )
        raise ConfigError(
            f"`store` has {shown}. Use a local path or one of "
            f"{[s + '://' for s in SCHEMES]}, or pass a TensorStore kvstore spec dict."
        )
    if scheme in ("s3", "gs"):
        bucket, path = bucket_url(scheme, store, "`store`")
        return Location(s3_spec(bucket, path) if scheme == "s3" else gcs_spec(bucket, path))
    authority = rest.split("/", 1)[0]
    user_info = "@" in rest and (scheme != "file" or authority not in ("", "localhost"))
    check_url_text(scheme, rest, "`store`", user_info=user_info)
    if scheme == "file":
        if authority not in ("", "localhost"):
            host = (
                f"the host '{authority}'" if _HOST.match(authority) else "a host (not shown here)"
            )
            raise ConfigError(
                f"`store` file://{authority if _HOST.match(authority) else '...'}/... names "
                f"{host}; a file:// URL is local: write file:///absolute/path (three slashes) or a "
                "plain path."
            )
        return Location(_file("/" + rest[len(authority) :].lstrip("/")))
    return Location({"driver": "memory", "path": _dir(rest)})


def bucket_url(scheme: str, url: Any, what: str) -> tuple[str, str]:
    """``(bucket, path)`` of `url`: ``scheme://bucket/path`` or ``bucket/path``; a ConfigError
    (naming `what`, the argument) for anything else: another scheme, user info, a query string
    or fragment, an implausible bucket name (none of them shown), or a '.' or '..' segment."""
    if not isinstance(url, str) or not url:
        raise ConfigError(
            f"{what} must be a string '{scheme}://bucket/prefix' or 'bucket/prefix'; "
            f"got {type(url).__name__}."
        )
    rest = url
    if "://" in url:
        given, rest = url.split("://", 1)
        if given.lower() != scheme:
            shown = (
                f"a {given.lower()}:// URL" if given.isalnum() else "another URL (not shown here)"
            )
            raise ConfigError(f"{what} must be a {scheme}:// URL or 'bucket/prefix'; got {shown}.")
    check_url_text(scheme, rest, what, user_info="@" in rest)
    bucket, _, path = rest.partition("/")
    check_bucket(scheme, bucket, what)
    check_segments(scheme, bucket, path, what)
    return bucket, path.strip("/")


def check_url_text(scheme: str, rest: str, what: str, *, user_info: bool) -> None:
    """A ConfigError, showing nothing of `rest` (a URL after ``scheme://``), if it holds
    `user_info` or a query string or fragment."""
    if user_info:
        raise ConfigError(
            f"{what} {scheme}://... holds user info (not shown here; an '@' in such a URL is taken "
            "as user info); jaxsinks takes no credentials in URLs. Pass them with "
            "jaxsinks.s3(..., credentials=...) or the environment (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY); for a key that really holds '@', pass a kvstore spec dict."
        )
    if "?" in rest or "#" in rest:
        raise ConfigError(
            f"{what} {scheme}://... has a query string or fragment ('?' or '#'; not shown here), "
            "which jaxsinks neither uses nor drops silently. Remove it (options and credentials "
            "go in their own arguments: jaxsinks.s3(..., credentials=...) or the environment); "
            "for a local path holding '?' or '#', give the plain path."
        )


def check_bucket(scheme: str, bucket: Any, what: str) -> None:
    """A ConfigError unless `bucket` is a plausible bucket name (never echoed if it could hold a
    secret: only names of letters, digits, '.', '-' and '_' are shown)."""
    if not isinstance(bucket, str) or not bucket:
        raise ConfigError(f"{what} {scheme}://... needs a bucket name: {scheme}://BUCKET/path.")
    if not _BUCKET.match(bucket):
        shown = f"'{bucket}'" if _HOST.match(bucket) else "(not shown here)"
        raise ConfigError(
            f"{what} names the bucket {shown}, which is not a bucket name: 3 to 222 letters, "
            "digits, '.', '-' or '_', starting and ending with a letter or digit "
            f"({scheme}://BUCKET/path). Credentials and endpoints go in their own arguments "
            "(jaxsinks.s3(..., credentials=..., endpoint=...))."
        )


def check_segments(scheme: str, bucket: str, path: str, what: str) -> None:
    """A ConfigError if the object path `path` (in the valid `bucket`) has a '.' or '..' segment:
    the store lists such a prefix literally while its HTTP requests resolve it, so a run would be
    written elsewhere than named (another prefix or bucket) and mode='w' would check another."""
    bad = next((part for part in path.split("/") if part in (".", "..")), None)
    if bad is not None:
        raise ConfigError(
            f"{what} {scheme}://{bucket}/... has the path segment '{bad}', which an object "
            "store's requests resolve but its listings do not: the run would be written elsewhere "
            "than named (another prefix or bucket) and mode='w' would check the wrong prefix. "
            f"Write the path without '.' and '..' segments ({scheme}://{bucket}/b/run.zarr, not "
            f"{scheme}://{bucket}/a/../b/run.zarr)."
        )


def check_endpoint(endpoint: Any, what: str) -> str:
    """`endpoint` if it is an ``http(s)://`` URL without user info, query string or fragment, else
    a ConfigError naming `what` (where it came from) that shows none of it but a plain scheme."""
    if not isinstance(endpoint, str):
        raise ConfigError(
            f"{what} must be an http(s):// URL of an S3-compatible server; got "
            f"{type(endpoint).__name__}."
        )
    if "@" in endpoint:
        raise ConfigError(
            f"{what} must be an http(s):// URL without user info (not shown here); credentials "
            "go in 'aws_credentials' of a kvstore spec, or jaxsinks.s3(..., credentials=...)."
        )
    if "?" in endpoint or "#" in endpoint:
        raise ConfigError(
            f"{what} must be an http(s):// URL without a query string or fragment ('?' or '#'; "
            "not shown here), which TensorStore does not support. Give the server's URL alone "
            "(e.g. https://minio.example.org:9000); credentials go in 'aws_credentials' of a "
            "kvstore spec, or jaxsinks.s3(..., credentials=...)."
        )
    scheme = urlsplit(endpoint).scheme
    if scheme not in ("http", "https"):
        shown = f"the scheme '{scheme}'" if _SCHEME.match(scheme) else "no valid scheme"
        raise ConfigError(
            f"{what} must be an http:// or https:// URL of an S3-compatible server; got one "
            f"with {shown}."
        )
    return endpoint


def s3_spec(
    bucket: str,
    path: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    credentials: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The kvstore spec of the S3 directory `path` in `bucket`. Unless given, the endpoint is
    ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, the region ``AWS_REGION`` or
    ``AWS_DEFAULT_REGION``, and the credentials source the environment's keys if
    ``AWS_ACCESS_KEY_ID`` is set (else TensorStore's default chain)."""
    spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": _dir(path)}
    if endpoint:
        spec["endpoint"] = check_endpoint(endpoint, "`endpoint`")
    else:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            if os.environ.get(name):
                spec["endpoint"] = check_endpoint(os.environ[name], f"The endpoint {name}")
                break
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        spec["aws_region"] = str(region)
    if credentials is None and os.environ.get("AWS_ACCESS_KEY_ID"):
        credentials = {"type": "environment"}
    if credentials is not None:
        spec["aws_credentials"] = credentials
    return spec


def gcs_spec(bucket: str, path: str) -> dict[str, Any]:
    """The kvstore spec of the Google Cloud Storage directory `path` in `bucket`."""
    return {"driver": "gcs", "bucket": bucket, "path": _dir(path)}


def describe(kvstore: dict[str, Any]) -> str:
    """A short, credential-free description of a kvstore spec, for messages."""
    driver = kvstore.get("driver", "?")
    path = kvstore.get("path", "")
    if driver == "file":
        return path.rstrip("/") or "/"
    if driver == "memory":
        return f"memory://{path.rstrip('/')}"
    if driver == "s3":
        return f"s3://{kvstore.get('bucket', '?')}/{path.rstrip('/')}"
    if driver == "gcs":
        return f"gs://{kvstore.get('bucket', '?')}/{path.rstrip('/')}"
    return f"{driver} kvstore at '{path.rstrip('/')}'"


def _file(path: str) -> dict[str, Any]:
    return {"driver": "file", "path": _local_path(os.path.expanduser(path))}


def _local_path(path: str) -> str:
    """`path` absolute (a run stays where it was created when the working directory changes),
    as a directory; or a ConfigError for what TensorStore's file driver would write elsewhere (a
    backslash is a separator to it) or refuse (a NUL byte, a ``.__lock`` name: its lock files)."""
    for bad, what in (("\\", "a backslash"), ("\x00", "a NUL byte")):
        if bad in path:
            raise ConfigError(
                f"The local path {path!r} for `store` contains {what}, which TensorStore's file "
                "driver does not keep in a file name. Choose a path without it."
            )
    if any(part.endswith(".__lock") for part in path.split("/")):
        raise ConfigError(
            f"The local path {path!r} for `store` has a part ending in '.__lock', the suffix of "
            "TensorStore's lock files, which it refuses as a path. Rename that part."
        )
    return _dir(os.path.abspath(path))


def _from_dict(store: dict[str, Any]) -> dict[str, Any]:
    driver = store.get("driver")
    if not isinstance(driver, str):
        raise ConfigError(
            "A kvstore spec dict for `store` needs a string 'driver' key (e.g. 'file', 'memory', "
            f"'s3', 'gcs'); got keys {sorted(map(str, store))}."
        )
    scheme = {"s3": "s3", "gcs": "gs"}.get(driver)  # an object store's, for messages
    if scheme:
        check_bucket(scheme, store.get("bucket"), "The kvstore spec")
    if store.get("endpoint") is not None:
        check_endpoint(store["endpoint"], "The kvstore spec's 'endpoint'")
    if "aws_credentials" in store:
        check_aws_credentials(store["aws_credentials"])
    if driver == "file" and not store.get("path"):
        raise ConfigError(
            "A 'file' kvstore spec for `store` needs a non-empty 'path' (the run's directory); "
            "without one it would be the root directory '/'."
        )
    spec = copy.deepcopy(store)
    if "path" in spec:
        if not isinstance(spec["path"], str):
            raise ConfigError(
                f"The kvstore spec's 'path' must be a string; got {type(spec['path']).__name__}."
            )
        if driver == "file":
            spec["path"] = _local_path(spec["path"])
        else:
            if scheme:
                check_segments(scheme, spec["bucket"], spec["path"], "The kvstore spec")
            spec["path"] = _dir(spec["path"]) if spec["path"] else ""
    return spec


def check_aws_credentials(source: Any) -> None:
    """A ConfigError, showing none of its values, unless `source` is a TensorStore
    ``aws_credentials`` object: a dict whose 'type', if given, is one TensorStore knows."""
    if not isinstance(source, dict):
        raise ConfigError(
            "The kvstore spec's 'aws_credentials' must be a dict naming a credentials source, e.g. "
            f"{{'type': 'environment'}}; got {type(source).__name__} (not shown here). Keys go "
            "in jaxsinks.s3(..., credentials={'access_key_id': ..., 'secret_access_key': ...})."
        )
    if "type" in source and source["type"] not in AWS_CREDENTIAL_TYPES:
        raise ConfigError(
            "The kvstore spec's 'aws_credentials' has a 'type' (not shown here) that is not one of "
            f"{list(AWS_CREDENTIAL_TYPES)}. Use one of those; keys go in "
            "jaxsinks.s3(..., credentials={'access_key_id': ..., 'secret_access_key': ...})."
        )


def _dir(path: str) -> str:
    return path if path.endswith("/") or not path else path + "/"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
