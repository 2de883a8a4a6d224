"""Test helpers: a real local S3 server (moto) on a free port, for tests, examples and benchmarks.

```python
from jaxsinks.testing import local_s3_server

with local_s3_server() as server:
    sink = js.ZarrSink.create(server.store("run.zarr"), frame)
    ...
```

Nothing global is set unless asked (``set_env=True``): the server's endpoint, region and keys
travel in the `Location` that `S3Server.store` returns. Needs ``pip install 'jaxsinks[cloud]'``
(moto with its server extras, and boto3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO, Any

from ._core.errors import ConfigError, StoreError
from ._io.cloud import s3
from ._io.location import Location

#: The keys the local server is given (moto accepts any).
ACCESS_KEY_ID = "jaxsinks-test"
SECRET_ACCESS_KEY = "jaxsinks-test-secret"
REGION = "us-east-1"
START_TIMEOUT = 30.0

_INSTALL = "pip install 'jaxsinks[cloud]'"


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running local S3 server (moto) with one bucket. Also a context manager that stops it.

    Attributes:
        endpoint: its ``http://127.0.0.1:PORT`` URL.
        bucket: the bucket made at start.
        pid: the server process's id.
        region: the region requests are signed for.
        access_key_id: the key id it was given (moto accepts any keys).
        secret_access_key: the secret key it was given.
    """

    endpoint: str
    bucket: str
    pid: int
    region: str = REGION
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = dataclasses.field(default=SECRET_ACCESS_KEY, repr=False)
    _process: subprocess.Popen | None = dataclasses.field(default=None, repr=False, compare=False)
    _log: IO[bytes] | None = dataclasses.field(default=None, repr=False, compare=False)

    def url(self, path: str = "") -> str:
        """The ``s3://bucket/path`` URL of `path` in the bucket (needs the `env` variables set)."""
        return f"s3://{self.bucket}/{path.strip('/')}"

    def store(self, path: str = "", **options: Any) -> Location:
        """The store `path` in the bucket, with this server's endpoint, region and keys explicit
        (`jaxsinks.s3` `options`, e.g. ``retries``, are passed on).
        """
        options.setdefault(
            "credentials",
            {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key},
        )
        return s3(self.url(path), endpoint=self.endpoint, region=self.region, **options)

    def env(self) -> dict[str, str]:
        """The environment variables that make ``s3://`` URLs (and boto3, s3fs) use this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (to list, put or delete objects around a test)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options to read the bucket with zarr-python or xarray
        (``storage_options=``)."""
        return {
            "endpoint_url": self.endpoint,
            "key": self.access_key_id,
            "secret": self.secret_access_key,
            "client_kwargs": {"region_name": self.region},
        }

    def pause(self) -> None:
        """Stop the server process (SIGSTOP): it keeps its data and connections but answers
        nothing, like a hung server. `resume` continues it.
        """
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a paused server (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (its data, kept in memory, is lost). Safe to call twice."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
                process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def local_s3_server(
    bucket: str = "jaxsinks", *, port: int | None = None, set_env: bool = False
) -> S3Server:
    """Start a local S3 server (``python -m moto.server``) with an empty `bucket`; return it.

    Use it as a context manager (``with local_s3_server() as server:``), which stops it at the
    end, or call `S3Server.stop` yourself. The server keeps objects in memory.

    Args:
        bucket: the bucket to create (3 to 63 lowercase letters, digits, dots or hyphens).
        port: the port on 127.0.0.1 (default: a free one).
        set_env: also set `S3Server.env` in ``os.environ`` (so plain ``s3://`` URLs reach this
            server); they are not restored at stop.

    Raises:
        ConfigError: if moto or boto3 is not installed.
        StoreError: if the server does not answer within 30 s or the bucket cannot be made.
    """
    for module in ("moto", "flask", "boto3"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"`local_s3_server` needs the '{module}' package, which is not installed. "
                f"Install the cloud extras: {_INSTALL}."
            )
    port = _free_port() if port is None else port
    log = (
        tempfile.TemporaryFile()
    )  # the server logs every request: a file, never a pipe it could fill
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    server = S3Server(
        endpoint=f"http://127.0.0.1:{port}",
        bucket=bucket,
        pid=process.pid,
        _process=process,
        _log=log,
    )
    try:
        _wait_until_up(server, process, log)
        _make_bucket(server)
    except BaseException:
        server.stop()
        raise
    if set_env:
        os.environ.update(server.env())
    return server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(server: S3Server, process: subprocess.Popen, log: IO[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise StoreError(
                f"The local S3 server (moto) exited with status {process.returncode} at "
                f"start:\n{tail}"
            )
        try:
            with urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise StoreError(
        f"The local S3 server (moto) at {server.endpoint} did not answer within "
        f"{START_TIMEOUT:.0f} s."
    )


def _make_bucket(server: S3Server) -> None:
    try:
        server.client().create_bucket(Bucket=server.bucket)
    except Exception as err:  # botocore's ClientError, ParamValidationError, ...
        raise StoreError(
            f"Could not create the bucket '{server.bucket}' on the local S3 server: {err}"
        ) from None


__all__ = ["S3Server", "local_s3_server"]
