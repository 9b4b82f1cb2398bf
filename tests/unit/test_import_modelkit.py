"""modelkit's environment variables as a SOURCE (`mountfs modelkit: MOUNTPOINT`): which store, bucket,
prefix and settings each provider gives, and one error naming every missing variable."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from mountfs.config import StoreUrl, load_source
from mountfs.config.importers.modelkit import import_environment
from mountfs.errors import ConfigErrors

if TYPE_CHECKING:
    from tests.servers import S3Server

MODELKIT_VARIABLES = (
    "MODELKIT_STORAGE_PROVIDER", "MODELKIT_STORAGE_BUCKET", "MODELKIT_STORAGE_PREFIX", "MODELKIT_ASSETS_DIR",
    "S3_ENDPOINT", "AWS_KMS_KEY_ID", "AWS_DEFAULT_REGION", "AZURE_STORAGE_CONNECTION_STRING",
)  # fmt: skip


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in MODELKIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def only_mount(env: pytest.MonkeyPatch, **variables: str) -> StoreUrl:
    for name, value in variables.items():
        env.setenv(name, value)
    config = load_source("modelkit:")
    assert len(config.mounts) == 1 and config.mounts[0].path == ""
    return config.mounts[0].url


def test_s3_bucket_prefix_endpoint_and_region(env: pytest.MonkeyPatch) -> None:
    url = only_mount(env, MODELKIT_STORAGE_PROVIDER="s3", MODELKIT_STORAGE_BUCKET="assets",
                     MODELKIT_STORAGE_PREFIX="team/models", S3_ENDPOINT="http://127.0.0.1:9000",
                     AWS_DEFAULT_REGION="eu-west-3")
    assert (url.scheme, url.host, url.bucket, url.prefix) == ("s3", None, "assets", "team/models")
    config = load_source("modelkit:")
    assert config.s3.endpoint == "http://127.0.0.1:9000"
    assert config.s3.region == "eu-west-3"
    assert config.s3.key is None  # the AWS_* keys, AWS_SESSION_TOKEN and AWS_PROFILE: boto3's own chain


def test_prefix_defaults_to_modelkits(env: pytest.MonkeyPatch) -> None:
    url = only_mount(env, MODELKIT_STORAGE_PROVIDER="gcs", MODELKIT_STORAGE_BUCKET="bkt",
                     MODELKIT_STORAGE_PREFIX="")
    assert (url.scheme, url.bucket, url.prefix) == ("gs", "bkt", "modelkit-assets")


def test_kms_key_encrypts_uploads(env: pytest.MonkeyPatch) -> None:
    env.setenv("AWS_KMS_KEY_ID", "arn:aws:kms:eu-west-3:1:key/abc")
    only_mount(env, MODELKIT_STORAGE_PROVIDER="s3", MODELKIT_STORAGE_BUCKET="assets")
    extra = load_source("modelkit:").s3.extra_args.request_args()  # type: ignore[attr-defined]
    assert extra == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:eu-west-3:1:key/abc"}


def test_kms_key_is_emitted_as_extra_args(env: pytest.MonkeyPatch) -> None:
    """What the importer emits, whatever the loader of this branch knows."""
    imported = import_environment({"MODELKIT_STORAGE_PROVIDER": "s3", "MODELKIT_STORAGE_BUCKET": "b",
                                   "AWS_KMS_KEY_ID": "key-1"})
    assert imported.doc["s3"] == {"extra_args": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-1"}}


def test_gcs(env: pytest.MonkeyPatch) -> None:
    url = only_mount(env, MODELKIT_STORAGE_PROVIDER="gcs", MODELKIT_STORAGE_BUCKET="models",
                     MODELKIT_STORAGE_PREFIX="p")
    assert (url.scheme, url.bucket, url.prefix) == ("gs", "models", "p")


@pytest.mark.parametrize(("connection", "account"), [
    ("UseDevelopmentStorage=true", "devstoreaccount1"),
    ("DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=a2V5;EndpointSuffix=core.windows.net",
     "acct1"),
    ("BlobEndpoint=https://acct2.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x", "acct2"),
])  # fmt: skip
def test_az_container_is_the_bucket(env: pytest.MonkeyPatch, connection: str, account: str) -> None:
    url = only_mount(env, MODELKIT_STORAGE_PROVIDER="az", MODELKIT_STORAGE_BUCKET="models",
                     AZURE_STORAGE_CONNECTION_STRING=connection)
    assert (url.scheme, url.host, url.bucket, url.prefix) == ("az", account, "models", "modelkit-assets")


def test_local_folder_and_subdirectory(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = only_mount(env, MODELKIT_STORAGE_PROVIDER="local", MODELKIT_STORAGE_BUCKET=str(tmp_path),
                     MODELKIT_STORAGE_PREFIX="assets")
    assert url.scheme == "file" and url.bucket == f"{tmp_path}/assets"
    mount = load_source("modelkit:").mounts[0]
    assert not mount.read_only


def test_local_relative_folder_is_from_the_current_directory(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    env.chdir(tmp_path)
    url = only_mount(env, MODELKIT_STORAGE_PROVIDER="local", MODELKIT_STORAGE_BUCKET="store")
    assert url.bucket == f"{tmp_path}/store/modelkit-assets"


@pytest.mark.parametrize("provider", [None, "", " "])
def test_pre_downloaded_mode_is_a_read_only_folder(env: pytest.MonkeyPatch, tmp_path: Path,
                                                   provider: str | None) -> None:
    if provider is not None:
        env.setenv("MODELKIT_STORAGE_PROVIDER", provider)
    env.setenv("MODELKIT_ASSETS_DIR", str(tmp_path))
    env.setenv("MODELKIT_STORAGE_BUCKET", "ignored")
    mount = load_source("modelkit:").mounts[0]
    assert mount.read_only and mount.url.scheme == "file" and mount.url.bucket == str(tmp_path)


def test_a_dollar_brace_in_a_path_is_the_users_text(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "a${HOME}b"
    folder.mkdir()
    url = only_mount(env, MODELKIT_ASSETS_DIR=str(folder))
    assert url.bucket == str(folder)


def errors_of(env: pytest.MonkeyPatch, **variables: str) -> list[str]:
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(ConfigErrors) as info:
        load_source("modelkit:")
    return [e.format() for e in info.value.errors]


def test_every_missing_variable_is_named_with_its_provider(env: pytest.MonkeyPatch) -> None:
    errors = errors_of(env, MODELKIT_STORAGE_PROVIDER="az")
    assert errors == [
        "modelkit:: MODELKIT_STORAGE_BUCKET: is not set; MODELKIT_STORAGE_PROVIDER=az needs it",
        "modelkit:: AZURE_STORAGE_CONNECTION_STRING: is not set; MODELKIT_STORAGE_PROVIDER=az needs it",
    ]
    assert errors_of(env, MODELKIT_STORAGE_PROVIDER="s3") == [
        "modelkit:: MODELKIT_STORAGE_BUCKET: is not set; MODELKIT_STORAGE_PROVIDER=s3 needs it"]
    env.delenv("MODELKIT_STORAGE_PROVIDER")
    (error,) = errors_of(env)
    assert "MODELKIT_ASSETS_DIR: is not set; the pre-downloaded mode" in error


def test_unknown_provider_lists_the_accepted_names(env: pytest.MonkeyPatch) -> None:
    (error,) = errors_of(env, MODELKIT_STORAGE_PROVIDER="minio")
    assert 'unknown storage provider "minio"' in error
    assert "s3, s3_ssm, gcs, az, local" in error


def test_missing_folders_are_named(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (error,) = errors_of(env, MODELKIT_STORAGE_PROVIDER="local", MODELKIT_STORAGE_BUCKET=str(tmp_path / "no"))
    assert "MODELKIT_STORAGE_BUCKET" in error and "is not a folder" in error


def test_a_bad_bucket_names_the_variable(env: pytest.MonkeyPatch) -> None:
    (error,) = errors_of(env, MODELKIT_STORAGE_PROVIDER="s3", MODELKIT_STORAGE_BUCKET="ab")
    assert "MODELKIT_STORAGE_BUCKET" in error  # the store's own rule, named by the variable
    for provider, bucket in (("s3", "a b"), ("s3", "bucket/sub"), ("az", "c@other"), ("gcs", "gs://b")):
        env.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
        (error,) = errors_of(env, MODELKIT_STORAGE_PROVIDER=provider, MODELKIT_STORAGE_BUCKET=bucket)
        assert error.startswith(f'modelkit:: MODELKIT_STORAGE_BUCKET: "{bucket}" is not a bucket name')


def test_a_prefix_does_not_climb(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (error,) = errors_of(env, MODELKIT_STORAGE_PROVIDER="local", MODELKIT_STORAGE_BUCKET=str(tmp_path),
                         MODELKIT_STORAGE_PREFIX="../etc")
    assert error == 'modelkit:: MODELKIT_STORAGE_PREFIX: "../etc" must not contain "." or ".." segments'


def test_a_connection_string_without_account(env: pytest.MonkeyPatch) -> None:
    (error,) = errors_of(env, MODELKIT_STORAGE_PROVIDER="az", MODELKIT_STORAGE_BUCKET="c",
                         AZURE_STORAGE_CONNECTION_STRING="SharedAccessSignature=sv=1&sig=secretsig")
    assert "AZURE_STORAGE_CONNECTION_STRING" in error and "secretsig" not in error


def test_settings_file_and_modelkit_mounts(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`mountfs modelkit: MNT -o config=FILE`: the file's settings, modelkit's mount; the file's [s3]
    credentials stay beside the endpoint S3_ENDPOINT gives."""
    settings = tmp_path / "settings.toml"
    settings.write_text('[cache]\nmax_size = "1GiB"\n[[s3.credentials]]\nbucket = "assets"\n'
                        'key = "AK"\nsecret = "SK"\n')
    env.setenv("MODELKIT_STORAGE_PROVIDER", "s3")
    env.setenv("MODELKIT_STORAGE_BUCKET", "assets")
    env.setenv("S3_ENDPOINT", "http://127.0.0.1:9000")
    config = load_source("modelkit:", str(settings))
    assert config.cache.max_size == 1 << 30
    assert config.s3.endpoint == "http://127.0.0.1:9000"
    assert [c.bucket for c in config.s3.credentials] == ["assets"]
    assert config.mounts[0].url.bucket == "assets"


def test_s3_ssm_reads_the_bucket_from_the_parameter(env: pytest.MonkeyPatch, moto: S3Server) -> None:
    """modelkit's s3ssm driver: MODELKIT_STORAGE_BUCKET names an SSM parameter holding the bucket."""
    name = f"/modelkit/bucket-{uuid.uuid4().hex[:8]}"
    ssm = boto3.client("ssm", endpoint_url=moto.endpoint, region_name="us-east-1",
                       aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    ssm.put_parameter(Name=name, Value="real-bucket", Type="String")
    env.setenv("AWS_ENDPOINT_URL_SSM", moto.endpoint)
    env.setenv("AWS_ACCESS_KEY_ID", moto.access_key)
    env.setenv("AWS_SECRET_ACCESS_KEY", moto.secret_key)
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for provider in ("s3_ssm", "s3ssm"):
        url = only_mount(env, MODELKIT_STORAGE_PROVIDER=provider, MODELKIT_STORAGE_BUCKET=name)
        assert (url.scheme, url.bucket, url.prefix) == ("s3", "real-bucket", "modelkit-assets")
    (error,) = errors_of(env, MODELKIT_STORAGE_BUCKET="/modelkit/none")
    assert 'SSM parameter "/modelkit/none" cannot be read (ParameterNotFound)' in error
    assert os.environ["MODELKIT_STORAGE_PROVIDER"] == "s3ssm"


def test_config_check_reads_the_environment(env: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from mountfs import cli

    env.setenv("MODELKIT_ASSETS_DIR", str(tmp_path))
    assert cli.main(["config", "check", "modelkit:"]) == 0
    assert "modelkit:: ok (1 mount(s))" in capsys.readouterr().out
    env.setenv("MODELKIT_STORAGE_PROVIDER", "gcs")
    assert cli.main(["config", "check", "modelkit:"]) == 1
    err = capsys.readouterr().err
    assert "MODELKIT_STORAGE_BUCKET: is not set; MODELKIT_STORAGE_PROVIDER=gcs needs it" in err


def test_every_variable_of_modelkits_document_is_read() -> None:
    """The seed (modelkit's storage provider page) names these; each is read here or by a store."""
    from mountfs.config.importers import modelkit

    seed = (Path(__file__).parents[1] / "data" / "seeds" / "modelkit-storage-provider.txt").read_text()
    named = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", seed))
    assert "AWS_DEFAULT_PROFILE" in named and "S3_ENDPOINT" in named
    assert named <= set(modelkit.READ_HERE) | set(modelkit.READ_BY_STORES)
