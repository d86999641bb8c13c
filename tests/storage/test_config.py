"""Backend configuration: ``open_backend``, ``backend_from_env``, typed frozen configs, secrets."""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from datashard.errors import ConfigError, DataShardError, StoragePermissionError
from datashard.storage.azure import AzureBackend
from datashard.storage.azure_config import AzureConfig
from datashard.storage.config import (
    STORAGE_TYPES,
    BackendConfig,
    backend_class,
    backend_from_env,
    config_from_env,
    open_backend,
)
from datashard.storage.direct import DirectBackend, DirectConfig
from datashard.storage.gcs import GCSBackend
from datashard.storage.gcs_config import GCSConfig
from datashard.storage.local import LocalBackend, LocalConfig
from datashard.storage.memory import MemoryBackend, MemoryConfig
from datashard.storage.s3 import S3Backend, S3Config
from datashard.testing.servers import S3Server

ACCESS_KEY = "AKIADATASHARDTESTKEY9"
SECRET_KEY = "sEcReT/datashard+never-shown-0123456789"
TOKEN = "tOkEn-datashard-never-shown-9876543210"
SECRETS = (ACCESS_KEY, SECRET_KEY, TOKEN)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DATASHARD_* variable of the caller's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("DATASHARD_"):
            monkeypatch.delenv(name)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def s3_with_secrets(**extra: Any) -> S3Backend:
    backend = open_backend(
        "s3://bucket/pre/fix",
        endpoint_url="http://127.0.0.1:1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        session_token=TOKEN,
        **extra,
    )
    assert isinstance(backend, S3Backend)
    return backend


# -- open_backend ---------------------------------------------------------------------------


def test_open_backend_memory() -> None:
    backend = open_backend("memory://cfg-test")
    assert isinstance(backend, MemoryBackend)
    assert backend.config == MemoryConfig(name="cfg-test")
    assert backend.root_uri == "memory://cfg-test"


def test_open_backend_file_uri(tmp_path: Path) -> None:
    backend = open_backend(f"file://{tmp_path}")
    assert type(backend) is LocalBackend
    assert isinstance(backend.config, LocalConfig)
    assert backend.config.path == str(tmp_path)
    assert backend.root_uri == f"file://{tmp_path}"


def test_open_backend_direct_uri(tmp_path: Path) -> None:
    backend = open_backend(f"direct://{tmp_path}", block_size=1 << 20, fallback=True)
    assert type(backend) is DirectBackend
    assert backend.config == DirectConfig(path=str(tmp_path), block_size=1 << 20, fallback=True)
    assert backend.root_uri == f"direct://{tmp_path}"


def test_open_backend_s3_uri_splits_bucket_and_prefix() -> None:
    backend = open_backend("s3://my-bucket/some/prefix/", endpoint_url="http://127.0.0.1:9")
    assert isinstance(backend, S3Backend)
    assert isinstance(backend.config, S3Config)
    assert backend.config.bucket == "my-bucket"
    assert backend.config.prefix == "some/prefix"
    assert backend.config.endpoint_url == "http://127.0.0.1:9"
    assert backend.root_uri == "s3://my-bucket/some/prefix"
    assert backend.uri_for("a/b") == "s3://my-bucket/some/prefix/a/b"


def test_open_backend_s3_bucket_only() -> None:
    backend = open_backend("s3://my-bucket")
    assert isinstance(backend.config, S3Config)
    assert backend.config.prefix == ""
    assert backend.root_uri == "s3://my-bucket"


def test_open_backend_scheme_is_case_insensitive() -> None:
    assert isinstance(open_backend("MEMORY://x"), MemoryBackend)


def test_plain_absolute_path_is_local(tmp_path: Path) -> None:
    backend = open_backend(str(tmp_path))
    assert type(backend) is LocalBackend
    assert backend.config.path == str(tmp_path)


def test_plain_relative_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_backend("warehouse/tables")
    assert type(backend) is LocalBackend
    assert backend.config.path == str(tmp_path / "warehouse" / "tables")
    monkeypatch.chdir("/")
    assert backend.config.path == str(tmp_path / "warehouse" / "tables")


def test_file_uri_must_be_absolute() -> None:
    with pytest.raises(ConfigError, match="relative/dir"):
        open_backend("file://relative/dir")


@pytest.mark.parametrize("uri", ["ftp://host/x", "hdfs://nn/x", "gopher://x"])
def test_unknown_scheme_names_it(uri: str) -> None:
    scheme = uri.split("://")[0]
    with pytest.raises(ConfigError) as info:
        open_backend(uri)
    assert repr(scheme) in str(info.value)
    assert "s3" in str(info.value) and "file" in str(info.value)


@pytest.mark.parametrize("uri", ["", None, 42])
def test_empty_or_non_str_uri_is_a_config_error(uri: Any) -> None:
    with pytest.raises(ConfigError):
        open_backend(uri)


@pytest.mark.parametrize(
    "uri", ["memory://x", "file:///tmp/x", "direct:///tmp/x", "s3://bucket/prefix"]
)
def test_unknown_option_names_it(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_backend(uri, no_such_option=1)
    message = str(info.value)
    assert "'no_such_option'" in message
    assert "max_concurrency" in message  # lists what is accepted


def test_several_unknown_options_are_all_named() -> None:
    with pytest.raises(ConfigError) as info:
        open_backend("memory://x", colour="red", flavour="mint")
    assert "'colour'" in str(info.value) and "'flavour'" in str(info.value)


@pytest.mark.parametrize(
    ("uri", "field", "value", "expected"),
    [
        ("s3://b", "part_size", 8.5, "int"),
        ("s3://b", "part_size", "big", "int"),
        ("s3://b", "part_size", True, "int"),
        ("s3://b", "anonymous", "perhaps", "bool"),
        ("s3://b", "anonymous", 3, "bool"),
        ("s3://b", "connect_timeout", "soon", "float"),
        ("s3://b", "endpoint_url", 8080, "str"),
        ("memory://x", "max_concurrency", 2.5, "int"),
        ("memory://x", "retry_first_delay", "later", "float"),
        ("memory://x", "read_rate_limit", [1], "float"),
        ("file:///tmp/x", "retry_attempts", None, "int"),
        ("direct:///tmp/x", "fallback", "sometimes", "bool"),
        ("direct:///tmp/x", "block_size", "4k", "int"),
    ],
)
def test_wrong_typed_option_names_field_and_expected_type(
    uri: str, field: str, value: Any, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        open_backend(uri, **{field: value})
    message = str(info.value)
    assert field in message
    assert expected in message


def test_string_option_values_are_coerced() -> None:
    config = open_backend("s3://b", part_size="8388608", anonymous="yes").config
    assert isinstance(config, S3Config)
    assert config.part_size == 8 * 1024 * 1024
    assert config.anonymous is True


def test_int_is_accepted_for_a_float_field() -> None:
    config = open_backend("memory://x", retry_first_delay=2).config
    assert config.retry_first_delay == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("retry_attempts", 0), ("max_concurrency", 0), ("retry_first_delay", -1.0)],
)
def test_out_of_range_shared_setting_is_a_config_error(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        open_backend("memory://x", **{field: value})


def test_uri_and_option_must_agree() -> None:
    with pytest.raises(ConfigError, match="bucket"):
        open_backend("s3://one/p", bucket="two")


def test_s3_part_size_below_the_s3_minimum_is_refused() -> None:
    with pytest.raises(ConfigError, match="part_size"):
        open_backend("s3://b", part_size=1024)


# -- frozen configs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "value"),
    [
        (MemoryConfig(name="x"), "name", "y"),
        (LocalConfig(path="/tmp/x"), "path", "/elsewhere"),
        (DirectConfig(path="/tmp/x"), "fallback", True),
        (S3Config(bucket="b"), "bucket", "other"),
        (S3Config(bucket="b"), "max_concurrency", 1),
    ],
)
def test_configs_are_frozen(config: BackendConfig, field: str, value: Any) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, value)


def test_configs_compare_and_hash_by_value() -> None:
    assert S3Config(bucket="b", prefix="p") == S3Config(bucket="b", prefix="p")
    assert hash(MemoryConfig(name="x")) == hash(MemoryConfig(name="x"))


def test_config_survives_pickling() -> None:
    config = S3Config(bucket="b", prefix="p", part_size=6 * 1024 * 1024, region="eu-west-1")
    assert pickle.loads(pickle.dumps(config)) == config


# -- environment ----------------------------------------------------------------------------


def test_nothing_set_gives_the_local_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    envs: tuple[dict[str, str] | None, ...] = ({}, None)
    for env in envs:
        backend = backend_from_env(env)
        assert type(backend) is LocalBackend
        assert backend.config == LocalConfig(path=str(tmp_path / "datashard-warehouse"))
        assert backend.config.max_concurrency == 32
        assert backend.config.retry_attempts == 32


def test_storage_type_selects_the_backend(tmp_path: Path) -> None:
    assert isinstance(backend_from_env({"DATASHARD_STORAGE_TYPE": "memory"}), MemoryBackend)
    direct = backend_from_env(
        {"DATASHARD_STORAGE_TYPE": "Direct", "DATASHARD_DIRECT_PATH": str(tmp_path)}
    )
    assert type(direct) is DirectBackend
    assert direct.root_uri == f"direct://{tmp_path}"
    local = backend_from_env({"DATASHARD_STORAGE_TYPE": "local", "DATASHARD_LOCAL_PATH": "/srv"})
    assert local.root_uri == "file:///srv"


def test_unknown_storage_type_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        backend_from_env({"DATASHARD_STORAGE_TYPE": "floppy"})
    assert "floppy" in str(info.value)
    assert "s3" in str(info.value)


def test_s3_from_environment_uses_the_short_names() -> None:
    env = {
        "DATASHARD_STORAGE_TYPE": "s3",
        "DATASHARD_S3_ENDPOINT": "http://127.0.0.1:9000",
        "DATASHARD_S3_ACCESS_KEY": ACCESS_KEY,
        "DATASHARD_S3_SECRET_KEY": SECRET_KEY,
        "DATASHARD_S3_BUCKET": "tables",
        "DATASHARD_S3_REGION": "eu-central-1",
        "DATASHARD_S3_PREFIX": "team/a",
    }
    backend = backend_from_env(env)
    assert isinstance(backend, S3Backend)
    config = backend.config
    assert isinstance(config, S3Config)
    assert (config.endpoint_url, config.bucket, config.region, config.prefix) == (
        "http://127.0.0.1:9000",
        "tables",
        "eu-central-1",
        "team/a",
    )
    assert (config.access_key_id, config.secret_access_key) == (ACCESS_KEY, SECRET_KEY)
    assert backend.root_uri == "s3://tables/team/a"


def test_s3_from_environment_without_bucket_names_the_field() -> None:
    with pytest.raises(ConfigError, match="bucket"):
        backend_from_env({"DATASHARD_STORAGE_TYPE": "s3"})


@pytest.mark.parametrize(
    ("name", "raw", "field", "value"),
    [
        ("DATASHARD_S3_PART_SIZE", "6291456", "part_size", 6291456),
        ("DATASHARD_S3_MULTIPART_THRESHOLD", " 0 ", "multipart_threshold", 0),
        ("DATASHARD_S3_CONNECT_TIMEOUT", "2.5", "connect_timeout", 2.5),
        ("DATASHARD_S3_READ_TIMEOUT", "7", "read_timeout", 7.0),
        ("DATASHARD_S3_ANONYMOUS", "true", "anonymous", True),
        ("DATASHARD_S3_ANONYMOUS", "1", "anonymous", True),
        ("DATASHARD_S3_ANONYMOUS", "YES", "anonymous", True),
        ("DATASHARD_S3_ANONYMOUS", "off", "anonymous", False),
        ("DATASHARD_S3_ANONYMOUS", "0", "anonymous", False),
        ("DATASHARD_S3_REQUESTER_PAYS", "on", "requester_pays", True),
        ("DATASHARD_S3_PATH_STYLE", "false", "path_style", False),
        ("DATASHARD_S3_PATH_STYLE", "", "path_style", None),
        ("DATASHARD_RETRY_ATTEMPTS", "5", "retry_attempts", 5),
        ("DATASHARD_RETRY_FIRST_DELAY", "0.25", "retry_first_delay", 0.25),
        ("DATASHARD_RETRY_MAX_DELAY", "4", "retry_max_delay", 4.0),
        ("DATASHARD_READ_RATE_LIMIT", "100.5", "read_rate_limit", 100.5),
        ("DATASHARD_WRITE_RATE_LIMIT", "", "write_rate_limit", None),
    ],
)
def test_environment_values_are_coerced_to_the_field_type(
    name: str, raw: str, field: str, value: object
) -> None:
    env = {"DATASHARD_STORAGE_TYPE": "s3", "DATASHARD_S3_BUCKET": "b", name: raw}
    config = config_from_env(env)
    got = getattr(config, field)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    ("name", "raw", "field", "expected"),
    [
        ("DATASHARD_S3_PART_SIZE", "8MiB", "part_size", "int"),
        ("DATASHARD_S3_ANONYMOUS", "maybe", "anonymous", "bool"),
        ("DATASHARD_S3_CONNECT_TIMEOUT", "fast", "connect_timeout", "float"),
        ("DATASHARD_RETRY_ATTEMPTS", "many", "retry_attempts", "int"),
    ],
)
def test_bad_environment_value_names_field_and_type(
    name: str, raw: str, field: str, expected: str
) -> None:
    env = {"DATASHARD_STORAGE_TYPE": "s3", "DATASHARD_S3_BUCKET": "b", name: raw}
    with pytest.raises(ConfigError) as info:
        config_from_env(env)
    assert field in str(info.value)
    assert expected in str(info.value)
    assert repr(raw) in str(info.value)


def test_unknown_s3_variable_names_it() -> None:
    env = {"DATASHARD_STORAGE_TYPE": "s3", "DATASHARD_S3_BUCKET": "b", "DATASHARD_S3_FOO": "1"}
    with pytest.raises(ConfigError) as info:
        backend_from_env(env)
    assert "DATASHARD_S3_FOO" in str(info.value)
    assert "DATASHARD_S3_ENDPOINT" in str(info.value)  # lists what is accepted


@pytest.mark.parametrize(
    ("env", "named", "resembles"),
    [
        ({"DATASHARD_STORAGE_TYP": "s3"}, "DATASHARD_STORAGE_TYP", "DATASHARD_STORAGE_TYPE"),
        (
            {"DATASHARD_MAX_CONCURENCY": "4"},
            "DATASHARD_MAX_CONCURENCY",
            "DATASHARD_MAX_CONCURRENCY",
        ),
        (
            {"DATASHARD_STORAGE_TYPE": "s3", "DATASHARD_S3_BUCKET": "b", "DATASHARD_S3_BUKET": "b"},
            "DATASHARD_S3_BUKET",
            "DATASHARD_S3_BUCKET",
        ),
        ({"DATASHARD_LOCAL_PAHT": "/srv"}, "DATASHARD_LOCAL_PAHT", "DATASHARD_LOCAL_PATH"),
        ({"DATASHARD_WAREHOUSE": "/srv"}, "DATASHARD_WAREHOUSE", None),
    ],
)
def test_unknown_variable_is_an_error_naming_it_and_the_name_it_resembles(
    env: dict[str, str], named: str, resembles: str | None
) -> None:
    with pytest.raises(ConfigError) as info:
        backend_from_env(env)
    message = str(info.value)
    assert f"unknown environment variable {named}" in message
    if resembles is not None:
        assert f"did you mean {resembles}?" in message
    else:
        assert "did you mean" not in message
        assert "DATASHARD_STORAGE_TYPE" in message  # says what is read instead


@pytest.mark.parametrize(
    ("env", "named", "wanted"),
    [
        # the S3 variables set, DATASHARD_STORAGE_TYPE forgotten: not the local default
        (
            {"DATASHARD_S3_BUCKET": "tables", "DATASHARD_S3_ENDPOINT": "http://127.0.0.1:9000"},
            "DATASHARD_S3_BUCKET",
            "s3",
        ),
        (
            {"DATASHARD_STORAGE_TYPE": "azure", "DATASHARD_S3_BUCKET": "tables"},
            "DATASHARD_S3_BUCKET",
            "s3",
        ),
        (
            {"DATASHARD_STORAGE_TYPE": "memory", "DATASHARD_GCS_BUCKET": "b"},
            "DATASHARD_GCS_BUCKET",
            "gcs",
        ),
        (
            {
                "DATASHARD_STORAGE_TYPE": "s3",
                "DATASHARD_S3_BUCKET": "b",
                "DATASHARD_LOCAL_PATH": "/x",
            },
            "DATASHARD_LOCAL_PATH",
            "local",
        ),
        ({"DATASHARD_DIRECT_PATH": "/x"}, "DATASHARD_DIRECT_PATH", "direct"),
    ],
)
def test_variables_of_another_storage_type_are_refused(
    env: dict[str, str], named: str, wanted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        backend_from_env(env)
    message = str(info.value)
    assert named in message
    assert f"DATASHARD_STORAGE_TYPE={wanted}" in message  # what to set


def test_every_problem_in_the_environment_is_named_at_once() -> None:
    env = {"DATASHARD_STORAGE_TYP": "s3", "DATASHARD_S3_BUCKET": "b"}
    with pytest.raises(ConfigError) as info:
        backend_from_env(env)
    assert "DATASHARD_STORAGE_TYP " in str(info.value)
    assert "DATASHARD_S3_BUCKET configures storage type 's3'" in str(info.value)


@pytest.mark.parametrize(
    "env",
    [
        {"DATASHARD_STORAGE_TYP": "s3", "DATASHARD_S3_BUCKET": "tables"},
        {"DATASHARD_S3_BUCKET": "tables", "DATASHARD_S3_REGION": "eu-central-1"},
        {"DATASHARD_LOCAL_PAHT": "elsewhere"},
    ],
)
def test_a_wrong_environment_creates_no_table_anywhere(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported case: these used to write the table to ./datashard-warehouse."""
    import datashard

    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError):
        datashard.create_table("events", [{"id": 1, "name": "x", "type": "long"}])
    assert list(tmp_path.iterdir()) == []


def test_two_variables_for_one_field_are_refused() -> None:
    env = {
        "DATASHARD_STORAGE_TYPE": "s3",
        "DATASHARD_S3_BUCKET": "b",
        "DATASHARD_S3_ENDPOINT": "http://127.0.0.1:9000",
        "DATASHARD_S3_ENDPOINT_URL": "http://127.0.0.1:9001",
    }
    with pytest.raises(ConfigError, match="DATASHARD_S3_ENDPOINT and DATASHARD_S3_ENDPOINT_URL"):
        backend_from_env(env)


def test_test_and_benchmark_tool_variables_are_left_alone() -> None:
    env = {
        "DATASHARD_STORAGE_TYPE": "memory",
        "DATASHARD_TEST_GCS_BUCKET": "b",
        "DATASHARD_BENCH_S3_ENDPOINT": "http://127.0.0.1:1",
        "DATASHARD_SERVER_PID": "1",
    }
    assert isinstance(backend_from_env(env), MemoryBackend)


@pytest.mark.parametrize("kind", sorted(STORAGE_TYPES))
def test_the_environment_check_knows_each_backends_config(kind: str) -> None:
    """``check_environment`` names variables by config class without importing backends: the
    classes it uses are the backends' own."""
    from datashard.storage.config import _config_class

    assert backend_class(STORAGE_TYPES[kind]).config_class is _config_class(kind)  # type: ignore[attr-defined]


def test_max_concurrency_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"DATASHARD_STORAGE_TYPE": "memory", "DATASHARD_MAX_CONCURRENCY": "7"}
    config = config_from_env(env)
    assert config.max_concurrency == 7
    assert config.request_gate().max_concurrency == 7
    monkeypatch.setenv("DATASHARD_MAX_CONCURRENCY", "5")
    assert open_backend("memory://x").config.max_concurrency == 5
    assert open_backend("memory://x", max_concurrency=3).config.max_concurrency == 3
    assert backend_from_env(None).config.max_concurrency == 5


def test_explicit_environment_mapping_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """``backend_from_env(env)`` reads ``env``, not ``os.environ`` behind the caller's back."""
    monkeypatch.setenv("DATASHARD_MAX_CONCURRENCY", "5")
    monkeypatch.setenv("DATASHARD_STORAGE_TYPE", "s3")
    config = config_from_env({"DATASHARD_STORAGE_TYPE": "memory"})
    assert isinstance(config, MemoryConfig)
    assert config.max_concurrency == 32


@pytest.mark.parametrize("raw", ["lots", "0", "-4", "2.5"])
def test_bad_max_concurrency_names_the_variable(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="(?i)max_concurrency"):
        config_from_env({"DATASHARD_STORAGE_TYPE": "memory", "DATASHARD_MAX_CONCURRENCY": raw})
    monkeypatch.setenv("DATASHARD_MAX_CONCURRENCY", raw)
    with pytest.raises(ConfigError, match="(?i)max_concurrency"):
        open_backend("memory://x")


# -- secrets --------------------------------------------------------------------------------


def test_secrets_are_not_in_config_repr_or_str() -> None:
    config = s3_with_secrets().config
    assert_no_secret(repr(config))
    assert_no_secret(str(config))
    assert_no_secret(f"{config}")
    assert "bucket" in repr(config)  # still useful


def test_secrets_are_not_in_backend_repr_or_str() -> None:
    backend = s3_with_secrets()
    assert_no_secret(repr(backend))
    assert_no_secret(str(backend))
    assert_no_secret(backend.root_uri)
    assert_no_secret(backend.uri_for("k"))


def test_secrets_are_not_in_environment_config_repr() -> None:
    env = {
        "DATASHARD_STORAGE_TYPE": "s3",
        "DATASHARD_S3_BUCKET": "b",
        "DATASHARD_S3_ACCESS_KEY": ACCESS_KEY,
        "DATASHARD_S3_SECRET_KEY": SECRET_KEY,
        "DATASHARD_S3_TOKEN": TOKEN,
    }
    assert_no_secret(repr(config_from_env(env)))
    assert_no_secret(repr(backend_from_env(env)))


@pytest.mark.parametrize(
    "options",
    [
        {"secret_access_key": 12345678},
        {"secret_access_key": [SECRET_KEY]},
        {"access_key_id": ACCESS_KEY},  # half a key pair
        {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "profile": "p"},
        {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "anonymous": True},
        {"session_token": (TOKEN,), "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY},
        {"secret_key": SECRET_KEY},  # unknown option: named, value not shown
        {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "part_size": "x"},
    ],
)
def test_config_errors_never_show_a_secret(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        open_backend("s3://bucket/prefix", **options)
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))


def test_environment_config_errors_never_show_a_secret() -> None:
    base = {"DATASHARD_STORAGE_TYPE": "s3", "DATASHARD_S3_BUCKET": "b"}
    for extra in (
        {"DATASHARD_S3_SECRETKEY": SECRET_KEY},
        {"DATASHARD_S3_SECRET_KEY": SECRET_KEY},
        {
            "DATASHARD_S3_ACCESS_KEY": ACCESS_KEY,
            "DATASHARD_S3_SECRET_KEY": SECRET_KEY,
            "DATASHARD_S3_PART_SIZE": "junk",
        },
    ):
        with pytest.raises(ConfigError) as info:
            config_from_env({**base, **extra})
        assert_no_secret(str(info.value))


@pytest.mark.s3
def test_wrong_credentials_raise_permission_error_without_the_secret(
    ceph_s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Ceph RGW checks signatures: a wrong secret is StoragePermissionError, and neither the
    error, its cause chain nor any log line shows the secret."""
    caplog.set_level(logging.DEBUG)
    backend = open_backend(
        f"s3://{ceph_s3.bucket}",
        endpoint_url=ceph_s3.endpoint_url,
        access_key_id=ceph_s3.access_key_id,
        secret_access_key=SECRET_KEY,
        region=ceph_s3.region,
        path_style=True,
        retry_attempts=1,
    )
    with pytest.raises(StoragePermissionError) as info:
        backend.read("any/key")
    exc: BaseException | None = info.value
    assert isinstance(exc, DataShardError) and isinstance(exc, PermissionError)
    while exc is not None:
        assert_no_secret(str(exc))
        assert_no_secret(repr(exc))
        exc = exc.__cause__ or exc.__context__
    for record in caplog.records:
        assert_no_secret(record.getMessage())


# -- Azure and GCS configs ------------------------------------------------------------------

AZURE_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={SECRET_KEY};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
)


def test_open_backend_azure_uris() -> None:
    for scheme in ("az", "abfs", "abfss"):
        backend = open_backend(f"{scheme}://tables/pre/fix", account_name="acct")
        assert isinstance(backend, AzureBackend)
        assert isinstance(backend.config, AzureConfig)
        assert (backend.config.container, backend.config.prefix) == ("tables", "pre/fix")
    assert open_backend("az://tables/p", account_name="acct").root_uri == "az://tables/p"


def test_open_backend_gcs_uri() -> None:
    backend = open_backend("gs://bucket/pre/fix", endpoint="http://127.0.0.1:1", anonymous=True)
    assert isinstance(backend, GCSBackend)
    assert isinstance(backend.config, GCSConfig)
    assert (backend.config.bucket, backend.config.prefix) == ("bucket", "pre/fix")
    assert backend.root_uri == "gs://bucket/pre/fix"


@pytest.mark.parametrize("uri", ["az://tables/p", "gs://bucket/p"])
def test_unknown_cloud_option_names_it(uri: str) -> None:
    with pytest.raises(ConfigError, match="'no_such_option'"):
        open_backend(uri, account_name="acct", no_such_option=1)


@pytest.mark.parametrize(
    ("uri", "options"),
    [
        ("az://tables/p", {"account_name": "devstoreaccount1", "account_key": SECRET_KEY}),
        ("az://tables/p", {"account_name": "devstoreaccount1", "sas_token": TOKEN}),
        ("az://tables/p", {"connection_string": AZURE_CONNECTION}),
        ("gs://bucket/p", {"token": TOKEN}),
        ("gs://bucket/p", {"credentials_json": f'{{"private_key": "{SECRET_KEY}"}}'}),
    ],
)
def test_cloud_secrets_are_not_in_repr_or_str(uri: str, options: dict[str, Any]) -> None:
    backend = open_backend(uri, **options)
    for text in (repr(backend), str(backend), repr(backend.config), str(backend.config)):
        assert_no_secret(text)


@pytest.mark.parametrize(
    ("uri", "options"),
    [
        ("az://tables/p", {"account_name": "a", "account_key": SECRET_KEY, "sas_token": TOKEN}),
        ("az://tables/p", {"account_key": SECRET_KEY}),  # no account name
        ("az://tables/p", {"connection_string": AZURE_CONNECTION, "account_key": SECRET_KEY}),
        ("az://tables/p", {"account_name": "a", "account_key": 12345}),
        ("az://tables/p", {"account_name": "a", "account_key": [SECRET_KEY]}),
        ("gs://bucket/p", {"token": TOKEN, "credentials_json": SECRET_KEY}),
        ("gs://bucket/p", {"token": (TOKEN,)}),
        ("gs://bucket/p", {"token": TOKEN, "part_size": "huge"}),
    ],
)
def test_cloud_config_errors_never_show_a_secret(uri: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        open_backend(uri, **options)
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))


def test_cloud_configs_from_environment() -> None:
    azure = config_from_env(
        {
            "DATASHARD_STORAGE_TYPE": "azure",
            "DATASHARD_AZURE_BUCKET": "tables",
            "DATASHARD_AZURE_ACCOUNT": "acct",
            "DATASHARD_AZURE_KEY": SECRET_KEY,
            "DATASHARD_AZURE_PART_SIZE": "1048576",
        }
    )
    assert isinstance(azure, AzureConfig)
    assert (azure.container, azure.account_name, azure.part_size) == ("tables", "acct", 1 << 20)
    assert_no_secret(repr(azure))
    gcs = config_from_env(
        {
            "DATASHARD_STORAGE_TYPE": "gcs",
            "DATASHARD_GCS_BUCKET": "b",
            "DATASHARD_GCS_ANONYMOUS": "1",
        }
    )
    assert isinstance(gcs, GCSConfig)
    assert (gcs.bucket, gcs.anonymous) == ("b", True)
    with pytest.raises(ConfigError, match="DATASHARD_GCS_FOO"):
        config_from_env({"DATASHARD_STORAGE_TYPE": "gcs", "DATASHARD_GCS_FOO": "1"})


# -- endpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "localhost:9000", "minio.internal"])
def test_s3_endpoint_without_a_scheme_is_a_config_error_naming_it(endpoint: str) -> None:
    """It used to surface as botocore's ``ValueError: Invalid endpoint`` at the first request."""
    with pytest.raises(ConfigError) as by_option:
        open_backend("s3://bucket", endpoint_url=endpoint)
    env = {
        "DATASHARD_STORAGE_TYPE": "s3",
        "DATASHARD_S3_BUCKET": "bucket",
        "DATASHARD_S3_ENDPOINT": endpoint,
    }
    with pytest.raises(ConfigError) as by_env:
        backend_from_env(env)
    for info in (by_option, by_env):
        message = str(info.value)
        assert "endpoint_url" in message
        assert "DATASHARD_S3_ENDPOINT" in message
        assert repr(endpoint) in message
        assert "http://" in message and "https://" in message
        assert f"'http://{endpoint}'" in message  # what to write instead


@pytest.mark.parametrize(
    "endpoint", ["htp://127.0.0.1:9000", "http://", "s3://bucket", "http://[::1"]
)
def test_s3_endpoint_that_is_not_an_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="endpoint_url"):
        open_backend("s3://bucket", endpoint_url=endpoint)


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:9000", "https://s3.example.com", "http://[::1]:9000/"]
)
def test_s3_http_and_https_endpoints_are_accepted(endpoint: str) -> None:
    backend = open_backend("s3://bucket", endpoint_url=endpoint)
    assert isinstance(backend.config, S3Config)
    assert backend.config.endpoint_url == endpoint


def test_endpoint_errors_never_show_a_secret() -> None:
    with pytest.raises(ConfigError) as info:
        open_backend("s3://bucket", endpoint_url=f"user:{SECRET_KEY}@127.0.0.1:9000")
    assert_no_secret(str(info.value))
    with pytest.raises(ConfigError) as info:
        open_backend(
            "az://tables", account_url=f"127.0.0.1:10000/devstoreaccount1?sig={SECRET_KEY}"
        )
    assert_no_secret(str(info.value))
    assert "127.0.0.1:10000/devstoreaccount1" in str(info.value)


def test_azure_account_url_without_a_scheme_is_a_config_error_naming_it() -> None:
    """The SDK would take it as https:// and fail at the first request on Azurite (http)."""
    with pytest.raises(ConfigError) as info:
        open_backend("az://tables", account_url="127.0.0.1:10000/devstoreaccount1")
    message = str(info.value)
    assert "account_url" in message and "DATASHARD_AZURE_ENDPOINT" in message
    assert "'127.0.0.1:10000/devstoreaccount1'" in message
    assert "http://" in message
    ok = open_backend("az://tables", account_url="http://127.0.0.1:10000/devstoreaccount1")
    assert isinstance(ok, AzureBackend)


def test_gcs_endpoint_must_be_http_or_a_bare_host() -> None:
    with pytest.raises(ConfigError) as info:
        open_backend("gs://bucket", endpoint="htp://127.0.0.1:9023")
    assert "DATASHARD_GCS_ENDPOINT" in str(info.value)
    assert "'htp://127.0.0.1:9023'" in str(info.value)
    for endpoint in ("127.0.0.1:9023", "http://127.0.0.1:9023", "https://storage.example.com"):
        config = open_backend("gs://bucket", endpoint=endpoint).config
        assert isinstance(config, GCSConfig)
        assert config.endpoint == endpoint
