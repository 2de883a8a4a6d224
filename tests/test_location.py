import pathlib
import re

import pytest

import jaxsinks as js
from jaxsinks._io.location import describe, parse


def test_local_paths_are_the_default_and_become_absolute_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = parse("runs/a.zarr")
    assert loc.kvstore == {"driver": "file", "path": f"{tmp_path}/runs/a.zarr/"}
    assert parse(pathlib.Path("runs/a.zarr")) == loc
    assert parse(f"file://{tmp_path}/runs/a.zarr") == loc
    assert loc.local_path == tmp_path / "runs" / "a.zarr"
    assert loc.child("x/y") == {"driver": "file", "path": f"{tmp_path}/runs/a.zarr/x/y/"}


def test_memory_s3_and_gs_urls(monkeypatch):
    for var in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    assert parse("memory://runs/a").kvstore == {"driver": "memory", "path": "runs/a/"}
    assert parse("s3://bucket/some/run.zarr").kvstore == {
        "driver": "s3",
        "bucket": "bucket",
        "path": "some/run.zarr/",
    }
    assert parse("gs://bkt/r").kvstore == {"driver": "gcs", "bucket": "bkt", "path": "r/"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-TEST")
    assert parse("s3://bkt/r").kvstore == {
        "driver": "s3",
        "bucket": "bkt",
        "path": "r/",
        "endpoint": "http://127.0.0.1:9000",
        "aws_region": "eu-west-1",
        "aws_credentials": {"type": "environment"},
    }


def test_kvstore_dicts_are_copied_and_get_a_directory_path():
    spec = {"driver": "memory", "path": "x"}
    loc = parse(spec)
    assert loc.kvstore == {"driver": "memory", "path": "x/"} and spec == {
        "driver": "memory",
        "path": "x",
    }


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
    spec = {
        "driver": "s3",
        "bucket": "b",
        "path": "p/",
        "endpoint": "http://h",
        "aws_credentials": {
            "type": "default",
            "access_key_id": "AKIASECRET",
            "secret_access_key": "SECRET",
        },
    }
    text = describe(spec)
    assert text == "s3://b/p" and "SECRET" not in text


# --------------------------------------------------------------- user info (credentials) in URLs

#: Every part of these secrets holds the marker, so that no fragment of one can hide in a message.
MARK = "Qz7"
SECRETS = [
    f"{MARK}a/{MARK}b",
    f"{MARK}a@{MARK}b",
    f"{MARK}a:{MARK}b",
    f"{MARK}x/{MARK}y@{MARK}z:{MARK}w",
    f"{MARK}/",
    f"/{MARK}",
    f"{MARK}a//{MARK}b",
]


@pytest.mark.parametrize("scheme", ["s3", "gs", "memory", "file"])
@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    "form",
    [
        "{key}:{secret}@bucket/run.zarr",
        "{secret}@bucket/run.zarr",
        "{key}:{secret}@bucket",
        "{key}@bucket/{secret}",
    ],
)
def test_user_info_is_refused_however_the_secret_is_spelled(scheme, secret, form):
    """A secret with '/', '@' or ':' (about half of AWS secrets hold '/') is refused, unshown."""
    url = f"{scheme}://" + form.format(key=f"AKIA{MARK}KEY", secret=secret)
    if scheme == "file" and url.startswith("file:///"):
        # file:///a@b/run (a secret starting with '/') is the local path /a@b/run: not user info
        return
    with pytest.raises(js.ConfigError, match="user info") as info:
        parse(url)
    assert MARK not in str(info.value) and "AKIA" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"s3://bucket/run.zarr?X-Amz-Credential={MARK}",
        f"gs://bucket/run#{MARK}",
        f"memory://run?token={MARK}",
        f"file:///tmp/run.zarr?{MARK}",
    ],
)
def test_query_strings_and_fragments_are_refused_not_dropped(url):
    with pytest.raises(js.ConfigError, match="query string or fragment") as info:
        parse(url)
    assert MARK not in str(info.value)


@pytest.mark.parametrize(
    "url, match",
    [
        (f"s3://AKIA{MARK}:x/bucket", "not a bucket name"),
        (f"AKIA:{MARK}@s3://bucket/x", "no valid URL scheme"),
        (f"file://{MARK}:x/run", "names a host"),
    ],
)
def test_what_could_be_a_secret_is_never_echoed(url, match):
    with pytest.raises(js.ConfigError, match=match) as info:
        parse(url)
    assert MARK not in str(info.value)


def test_buckets_keep_their_case_and_local_paths_may_hold_at_signs(tmp_path):
    assert (
        parse("s3://LegacyBucket/x").kvstore["bucket"] == "LegacyBucket"
    )  # urlsplit lowercased it
    assert parse(f"file://{tmp_path}/me@host/run").local_path == tmp_path / "me@host" / "run"
    assert parse(str(tmp_path / "a@b?#")).local_path == tmp_path / "a@b?#"


@pytest.mark.parametrize(
    "spec",
    [
        {"driver": "s3", "bucket": f"AKIA:{MARK}", "path": "x"},
        {"driver": "gcs", "bucket": f"{MARK}@bucket"},
        {"driver": "s3", "bucket": "bucket", "endpoint": f"http://AKIA:{MARK}/x@127.0.0.1:9000"},
    ],
)
def test_kvstore_dicts_with_user_info_in_bucket_or_endpoint_are_refused_unshown(spec):
    with pytest.raises(js.ConfigError) as info:
        parse(spec)
    assert MARK not in str(info.value)


# ---------------------------------------------------- one S3 parser for URLs and jaxsinks.s3


@pytest.mark.parametrize(
    "url, match",
    [
        (f"s3://AKIA{MARK}:{MARK}@bucket/run.zarr", "holds user info"),
        (f"s3://bucket/run.zarr?X-Amz-Credential={MARK}", "query string or fragment"),
        (f"s3://AKIA{MARK}:x/bucket", "not a bucket name"),
        ("s3:///path-only", "needs a bucket name"),
    ],
)
def test_s3_urls_and_jaxsinks_s3_refuse_the_same_urls_alike(url, match):
    """`parse` and `jaxsinks.s3` read a bucket URL with the same parser: same refusal, unshown."""
    texts = []
    for call in (lambda: parse(url), lambda: js.s3(url)):
        with pytest.raises(js.ConfigError, match=match) as info:
            call()
        assert MARK not in str(info.value)
        texts.append(str(info.value).split(" ", 1)[1])  # without the argument's name
    assert texts[0] == texts[1]


@pytest.mark.parametrize("var", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_an_endpoint_from_the_environment_is_checked_for_s3_urls_too(var, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, "ftp://host:21")
    with pytest.raises(js.ConfigError, match=f"The endpoint {var} must be an http:// or https://"):
        parse("s3://bucket/run.zarr")
    monkeypatch.setenv(var, f"http://AKIA:{MARK}@127.0.0.1:9000")
    for call in (lambda: parse("s3://bucket/run.zarr"), lambda: js.s3("bucket/run.zarr")):
        with pytest.raises(js.ConfigError, match="without user info") as info:
            call()
        assert MARK not in str(info.value)


def test_an_explicit_endpoint_with_user_info_is_refused_unshown():
    with pytest.raises(js.ConfigError, match="`endpoint` must be .* without user info") as info:
        js.s3("bucket/run.zarr", endpoint=f"https://AKIA:{MARK}@s3.example.com")
    assert MARK not in str(info.value)
    with pytest.raises(js.ConfigError, match="`endpoint` must be an http.*got int"):
        js.s3("bucket/run.zarr", endpoint=9000)


def test_a_relative_file_spec_dict_stays_where_the_run_was_created(tmp_path, monkeypatch):
    """A file kvstore dict's relative path was kept relative: after a chdir during the run, close
    said the run 'was deleted or replaced' though its frames were intact where it was made."""
    import jax.numpy as jnp

    monkeypatch.chdir(tmp_path)
    sink = js.ZarrSink.create({"driver": "file", "path": "rel.zarr"}, {"x": jnp.zeros(2)}, chunk=2)
    assert parse({"driver": "file", "path": "rel.zarr"}).kvstore["path"] == f"{tmp_path}/rel.zarr/"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for i in range(4):
        sink = sink.write({"x": jnp.full(2, float(i))}, step=i)
    js.close(sink)
    assert js.open(tmp_path / "rel.zarr").steps.tolist() == [0, 1, 2, 3]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    "name, match",
    [
        ("back\\slash.zarr", "contains a backslash"),
        ("nul\x00byte.zarr", "contains a NUL byte"),
        ("x.__lock/run.zarr", "a part ending in '.__lock'"),
        ("run.zarr.__lock", "a part ending in '.__lock'"),
    ],
    ids=["backslash", "NUL", "lock folder", "lock name"],
)
@pytest.mark.parametrize("form", ["path", "file URL", "dict"])
def test_local_paths_the_file_driver_would_change_or_refuse_are_config_errors(
    name, match, form, tmp_path
):
    """A backslash was a separator to TensorStore (``back\\slash.zarr`` written to
    ``back/slash.zarr``); a '.__lock' part was a bare 'Invalid file path'."""
    import jax.numpy as jnp

    path = f"{tmp_path}/{name}"
    store = {"path": path, "file URL": f"file://{path}", "dict": {"driver": "file", "path": path}}
    with pytest.raises(js.ConfigError, match=match) as info:
        js.ZarrSink.create(store[form], {"x": jnp.zeros(2)}, chunk=2)
    assert repr(path) in str(info.value) and "`store`" in str(info.value)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------ '.' and '..' segments; secrets in other options


def assert_unshown(error, secret):
    """`secret` is in neither the text nor the repr of `error` or of any error chained to it."""
    seen, todo = set(), [error]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        assert secret not in str(err) and secret not in repr(err)
        todo += [err.__cause__, err.__context__]


@pytest.mark.parametrize(
    "store, bad",
    [
        ("s3://bkt/../other/run.zarr", ".."),
        ("s3://bkt/x/../mine", ".."),
        ("s3://bkt/runs/./a.zarr", "."),
        ("s3://bkt/run.zarr/..", ".."),
        ("gs://bkt/x/../mine", ".."),
        ("gs://bkt/./run", "."),
        ({"driver": "s3", "bucket": "bkt", "path": "x/../mine"}, ".."),
        ({"driver": "gcs", "bucket": "bkt", "path": "../other/run"}, ".."),
        ({"driver": "s3", "bucket": "bkt", "path": "./run/"}, "."),
    ],
)
def test_dot_segments_in_object_store_paths_are_refused(store, bad):
    """S3 requests resolved '..' (s3://bkt/../other/run.zarr was written to the bucket 'other')
    while listings took it literally, so mode='w' checked an empty prefix and overwrote another."""
    with pytest.raises(js.ConfigError, match=f"has the path segment '{re.escape(bad)}'") as info:
        parse(store)
    where = "`store`" if isinstance(store, str) else "The kvstore spec"
    assert str(info.value).startswith(where) and "without '.' and '..' segments" in str(info.value)


@pytest.mark.parametrize("url", ["s3://bkt/x/../mine", "gs://bkt/./run"])
def test_jaxsinks_s3_and_gcs_refuse_dot_segments_too(url):
    build = js.s3 if url.startswith("s3") else js.gcs
    with pytest.raises(js.ConfigError, match=r"`path` (s3|gs)://bkt/\.\.\. has the path segment"):
        build(url)


def test_dots_inside_names_are_kept_and_local_dot_segments_are_resolved(tmp_path, monkeypatch):
    assert parse("s3://bkt/a..b/.hidden/run.zarr.").kvstore["path"] == "a..b/.hidden/run.zarr./"
    # Local paths (and 'file' kvstore dicts) are made absolute, which resolves '.' and '..': the
    # run is stored, listed and named at the same resolved directory.
    monkeypatch.chdir(tmp_path)
    resolved = f"{tmp_path}/b/run.zarr/"
    for store in (
        "a/../b/./run.zarr",
        f"file://{tmp_path}/a/../b/run.zarr",
        {"driver": "file", "path": "a/../b/run.zarr"},
    ):
        assert parse(store).kvstore["path"] == resolved
        assert str(parse(store)) == resolved.rstrip("/")


@pytest.mark.parametrize("tail", [f"/?X-Amz-Security-Token={MARK}", f"#{MARK}", f"?{MARK}#x"])
def test_an_endpoint_with_a_query_or_fragment_is_refused_unshown(tail, monkeypatch):
    """TensorStore refused it later with a StoreError quoting the whole endpoint, query included."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    endpoint = "http://127.0.0.1:9000" + tail
    calls = {
        "`endpoint`": lambda: js.open(js.s3("bkt/run.zarr", endpoint=endpoint)),
        "The kvstore spec's 'endpoint'": lambda: js.open(
            {"driver": "s3", "bucket": "bkt", "path": "run.zarr", "endpoint": endpoint}
        ),
    }
    for what, call in calls.items():
        with pytest.raises(js.ConfigError, match="without a query string or fragment") as info:
            call()
        assert str(info.value).startswith(what + " must be an http(s):// URL")
        assert_unshown(info.value, MARK)
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(var, endpoint)
        for call in (lambda: js.open("s3://bkt/run.zarr"), lambda: js.s3("bkt/run.zarr")):
            with pytest.raises(
                js.ConfigError, match=f"The endpoint {var} must be .* query"
            ) as info:
                call()
            assert_unshown(info.value, MARK)
        monkeypatch.delenv(var)


@pytest.mark.parametrize(
    "credentials, match",
    [
        (f"{MARK}secret", "must be a dict naming a credentials source.*got str"),
        ([f"{MARK}secret"], "must be a dict naming a credentials source.*got list"),
        ({"type": f"{MARK}secret"}, r"has a 'type' \(not shown here\) that is not one of"),
    ],
)
def test_kvstore_aws_credentials_that_are_not_a_source_are_refused_unshown(credentials, match):
    """A string here was quoted by TensorStore's 'Invalid spec or reference' error."""
    spec = {"driver": "s3", "bucket": "bkt", "path": "run.zarr", "aws_credentials": credentials}
    with pytest.raises(js.ConfigError, match=match) as info:
        js.open(spec)
    assert str(info.value).startswith("The kvstore spec's 'aws_credentials'")
    assert_unshown(info.value, MARK)
    for source in ("environment", "anonymous", "default", "imds", "profile", "ecs"):
        parse({**spec, "aws_credentials": {"type": source}})
