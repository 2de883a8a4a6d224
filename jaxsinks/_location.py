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
from typing import Any
from urllib.parse import urlsplit

from ._errors import ConfigError

SCHEMES = ("file", "memory", "s3", "gs")


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
    """Parse `store` (a path, a URL or a kvstore spec dict) into a `Location`."""
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
    parts = urlsplit(store)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"`store` has the unsupported scheme '{scheme}://'. Use a local path or one of "
            f"{[s + '://' for s in SCHEMES]}, or pass a TensorStore kvstore spec dict."
        )
    if "@" in parts.netloc:
        raise ConfigError(
            f"`store` {scheme}://... holds user info before the {'name' if scheme == 'memory' else 'bucket'} "
            "(not shown here); jaxsinks takes no credentials in URLs. Pass them with "
            "jaxsinks.s3(..., credentials=...) or the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)."
        )
    path = parts.path.lstrip("/")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"`store` file://{parts.netloc}/... names the host '{parts.netloc}'; a file:// URL is "
                "local: write file:///absolute/path (three slashes) or a plain path."
            )
        return Location(_file("/" + path))
    if scheme == "memory":
        return Location({"driver": "memory", "path": _dir(parts.netloc + "/" + path)})
    bucket = parts.hostname or ""
    if not bucket:
        raise ConfigError(f"`store` {scheme}://... needs a bucket name: {scheme}://BUCKET/path.")
    if scheme == "s3":
        return Location(_s3(bucket, path))
    return Location({"driver": "gcs", "bucket": bucket, "path": _dir(path)})


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
    return {"driver": "file", "path": _dir(os.path.abspath(os.path.expanduser(path)))}


def _s3(bucket: str, path: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": _dir(path)}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        spec["endpoint"] = endpoint
    if region:
        spec["aws_region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        spec["aws_credentials"] = {"type": "environment"}
    return spec


def _from_dict(store: dict[str, Any]) -> dict[str, Any]:
    driver = store.get("driver")
    if not isinstance(driver, str):
        raise ConfigError(
            "A kvstore spec dict for `store` needs a string 'driver' key (e.g. 'file', 'memory', "
            f"'s3', 'gcs'); got keys {sorted(map(str, store))}."
        )
    spec = copy.deepcopy(store)
    if "path" in spec:
        if not isinstance(spec["path"], str):
            raise ConfigError(f"The kvstore spec's 'path' must be a string; got {type(spec['path']).__name__}.")
        spec["path"] = _dir(spec["path"]) if spec["path"] else ""
    return spec


def _dir(path: str) -> str:
    return path if path.endswith("/") or not path else path + "/"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
