import pathlib

import pytest

import jaxsinks as js
from jaxsinks._location import describe, parse


def test_local_paths_are_the_default_and_become_absolute_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = parse("runs/a.zarr")
    assert loc.kvstore == {"driver": "file", "path": f"{tmp_path}/runs/a.zarr/"}
    assert parse(pathlib.Path("runs/a.zarr")) == loc
    assert parse(f"file://{tmp_path}/runs/a.zarr") == loc
    assert loc.local_path == tmp_path / "runs" / "a.zarr"
    assert loc.child("x/y") == {"driver": "file", "path": f"{tmp_path}/runs/a.zarr/x/y/"}


def test_memory_s3_and_gs_urls(monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(var, raising=False)
    assert parse("memory://runs/a").kvstore == {"driver": "memory", "path": "runs/a/"}
    assert parse("s3://bucket/some/run.zarr").kvstore == {"driver": "s3", "bucket": "bucket", "path": "some/run.zarr/"}
    assert parse("gs://b/r").kvstore == {"driver": "gcs", "bucket": "b", "path": "r/"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-TEST")
    assert parse("s3://b/r").kvstore == {
        "driver": "s3", "bucket": "b", "path": "r/", "endpoint": "http://127.0.0.1:9000",
        "aws_region": "eu-west-1", "aws_credentials": {"type": "environment"},
    }


def test_kvstore_dicts_are_copied_and_get_a_directory_path():
    spec = {"driver": "memory", "path": "x"}
    loc = parse(spec)
    assert loc.kvstore == {"driver": "memory", "path": "x/"} and spec == {"driver": "memory", "path": "x"}


@pytest.mark.parametrize(
    "store, match",
    [
        ("ftp://host/x", "unsupported scheme 'ftp://'"),
        ("s3:///path-only", "needs a bucket name"),
        ({"path": "x"}, "needs a string 'driver' key"),
        ({"driver": "file", "path": 3}, "'path' must be a string"),
        (42, "`store` must be a path, a URL"),
        ("", "`store` must be a path, a URL"),
    ],
)
def test_bad_stores_are_named(store, match):
    with pytest.raises(js.ConfigError, match=match):
        parse(store)


def test_descriptions_hold_no_credentials():
    spec = {"driver": "s3", "bucket": "b", "path": "p/", "endpoint": "http://h",
            "aws_credentials": {"type": "default", "access_key_id": "AKIASECRET", "secret_access_key": "SECRET"}}
    text = describe(spec)
    assert text == "s3://b/p" and "SECRET" not in text
