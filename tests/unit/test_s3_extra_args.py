"""The S3 settings ClearML users bring: extra_args, per-entry use_credentials_chain, role_arn, verify
(path or https URL), boto3.max_multipart_concurrency and a blank region, as the config reads them and
as `resolve` hands them to the store."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mountfs.backends.async_store import AsyncStore
from mountfs.backends.memory import MemoryStore
from mountfs.backends.s3 import S3Store
from mountfs.config import ConfigErrors, RetryConfig, WriteConfig, load_config, parse_url
from mountfs.config.model import S3ExtraArgs
from mountfs.config.s3 import resolve
from mountfs.upload.journal import UploadJournal
from mountfs.upload.uploader import Uploader

MOUNT = '\n[[mount]]\npath = "x"\nurl = "s3://any"\n'
KMS = "arn:aws:kms:eu-west-1:123456789012:key/k"


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No AWS setting of the machine leaks in."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(text) + MOUNT)
    return load_config(str(path))


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path, text)
    return [str(e) for e in info.value.errors]


def settings(config: Any, url: str) -> Any:
    return resolve(parse_url(url), config)


# --- extra_args ------------------------------------------------------------------------------------

def test_extra_args_default_and_per_entry_which_replaces_it(tmp_path: Path) -> None:
    config = load(tmp_path, f"""\
        [s3]
        [s3.extra_args]
        ServerSideEncryption = "AES256"
        StorageClass = "STANDARD_IA"
        ACL = "private"
        Metadata = {{ team = "vision", Project = "p1" }}
        [[s3.credentials]]
        bucket = "secret"
        extra_args = {{ ServerSideEncryption = "aws:kms", SSEKMSKeyId = "{KMS}" }}
        [[s3.credentials]]
        bucket = "plain"
        region = "eu-west-1"
        """)
    default = S3ExtraArgs("AES256", None, "STANDARD_IA", "private", (("team", "vision"), ("project", "p1")))
    assert settings(config, "s3://other").extra_args == default
    assert settings(config, "s3://plain").extra_args == default, "an entry without extra_args keeps [s3]'s"
    assert settings(config, "s3://secret").extra_args == S3ExtraArgs("aws:kms", KMS)
    assert default.request_args() == {"ServerSideEncryption": "AES256", "StorageClass": "STANDARD_IA",
                                      "ACL": "private"}


def test_kms_key_id_is_ssekmskeyid_with_aws_kms(tmp_path: Path) -> None:
    config = load(tmp_path, f"""\
        [s3]
        extra_args = {{ StorageClass = "GLACIER_IR" }}
        [[s3.credentials]]
        bucket = "old"
        kms_key_id = "{KMS}"
        [[s3.credentials]]
        bucket = "new"
        extra_args = {{ SSEKMSKeyId = "{KMS}", StorageClass = "GLACIER_IR" }}
        """)
    old, new = settings(config, "s3://old"), settings(config, "s3://new")
    assert old.extra_args == new.extra_args == S3ExtraArgs("aws:kms", KMS, "GLACIER_IR")
    assert old.kms_key_id == KMS
    store = S3Store(old, RetryConfig())
    assert store._sse() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS,
                            "StorageClass": "GLACIER_IR"}


@pytest.mark.parametrize(("toml", "message"), [
    ('[s3]\nextra_args = { Tagging = "a=b" }',
     "s3.extra_args.Tagging: not accepted: mountfs does not pass it on (accepted: ServerSideEncryption, "
     "SSEKMSKeyId, StorageClass, ACL, Metadata)"),
    ('[s3]\nextra_args = { ContentType = "text/plain" }',
     "s3.extra_args.ContentType: not accepted: it describes one file, not every file of a mount"),
    ('[s3]\nextra_args = { SSECustomerKey = "k" }',
     "s3.extra_args.SSECustomerKey: not accepted: reads would need the key too"),
    ('[[s3.credentials]]\nbucket = "b"\nextra_args = { ChecksumAlgorithm = "CRC32" }',
     "s3.credentials[0].extra_args.ChecksumAlgorithm: not accepted"),
    ('[s3]\nextra_args = { ServerSideEncryption = "aes256" }',
     "s3.extra_args.ServerSideEncryption: unknown value 'aes256' (one of AES256, aws:kms, aws:kms:dsse)"),
    ('[s3]\nextra_args = { StorageClass = "COLD" }',
     "s3.extra_args.StorageClass: unknown value 'COLD' (one of"),
    ('[s3]\nextra_args = { ACL = "everyone" }',
     "s3.extra_args.ACL: unknown value 'everyone' (one of private"),
    ('[s3]\nextra_args = { ServerSideEncryption = "AES256", SSEKMSKeyId = "k" }',
     "s3.extra_args.SSEKMSKeyId: a KMS key goes with ServerSideEncryption"),
    ('[s3]\nextra_args = { Metadata = { n = 1 } }',
     "s3.extra_args.Metadata.n: expected a string, got integer 1"),
    ('[s3]\nextra_args = { Metadata = { mtime = "1" } }',
     "s3.extra_args.Metadata.mtime: mountfs keeps each file's modification time under this name"),
    ('[s3]\nextra_args = { Metadata = { "a b" = "1" } }',
     's3.extra_args.Metadata."a b": not a metadata name'),
    ('[s3]\nextra_args = { Metadata = { a = "é" } }', "s3.extra_args.Metadata.a: S3 metadata values must be"),
    ('[s3]\nextra_args = { Metadata = "a=b" }', 's3.extra_args.Metadata: expected a table of strings'),
    ('[s3]\nextra_args = "AES256"', "s3.extra_args: expected a table"),
    ('[[s3.credentials]]\nbucket = "b"\nkms_key_id = "k1"\nextra_args = { SSEKMSKeyId = "k2" }',
     "s3.credentials[0].kms_key_id: extra_args names another encryption"),
])
def test_extra_args_refusals_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    got = errors(tmp_path, toml)
    assert len(got) == 1 and message in got[0], got


def test_refusals_never_show_a_secret(tmp_path: Path) -> None:
    got = errors(tmp_path, '[s3]\nkey = "AKIAVERYSECRET"\nsecret = "hushhush"\n'
                           'extra_args = { SSECustomerKey = "hushhush" }')
    assert got and not any("hushhush" in g or "AKIAVERYSECRET" in g for g in got)


# --- credentials: the chain per entry, roles --------------------------------------------------------

def test_use_credentials_chain_per_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    config = load(tmp_path, """\
        [s3]
        key = "CONFIGKEY"
        secret = "configsecret"
        [[s3.credentials]]
        bucket = "chained"
        use_credentials_chain = true
        [[s3.credentials]]
        bucket = "inherits"
        use_credentials_chain = false
        region = "eu-west-1"
        """)
    chained, inherits = settings(config, "s3://chained"), settings(config, "s3://inherits")
    assert chained.uses_chain and not inherits.uses_chain and inherits.key == "CONFIGKEY"

    def used_key(s: Any) -> str:
        credentials = S3Store(s, RetryConfig()).client._request_signer._credentials
        return str(credentials.get_frozen_credentials().access_key)

    assert used_key(chained) == "ENVKEY", "the chain's key, not [s3]'s"
    assert used_key(inherits) == "CONFIGKEY"


def test_role_arn_default_and_per_entry(tmp_path: Path) -> None:
    config = load(tmp_path, """\
        [s3]
        role_arn = "arn:aws:iam::123456789012:role/default"
        external_id = "ext-1"
        [[s3.credentials]]
        bucket = "own"
        role_arn = "arn:aws:iam::123456789012:role/own"
        role_session_name = "mountfs-own"
        [[s3.credentials]]
        host = "minio:9000"
        role_arn = "arn:minio:iam:::role/dRtKxHdq6pa5kKvd"
        """)
    assert settings(config, "s3://minio:9000/bkt").role_arn == "arn:minio:iam:::role/dRtKxHdq6pa5kKvd"
    default, own = settings(config, "s3://xyz"), settings(config, "s3://own")
    assert (default.role_arn, default.external_id, default.role_session_name) == (
        "arn:aws:iam::123456789012:role/default", "ext-1", None)
    assert (own.role_arn, own.external_id, own.role_session_name) == (
        "arn:aws:iam::123456789012:role/own", None, "mountfs-own"), "the entry's role comes with its own ids"
    assert "ext-1" not in repr(default)


@pytest.mark.parametrize(("toml", "message"), [
    ('[s3]\nrole_arn = "my-role"',
     's3.role_arn: expected a role ARN such as "arn:aws:iam::123456789012:role/'),
    ('[s3]\nexternal_id = "x"', "s3.external_id: goes with role_arn"),
    ('[[s3.credentials]]\nbucket = "b"\nrole_arn = "arn:aws:iam::123456789012:role/r"\n'
     'role_session_name = "a b"', "s3.credentials[0].role_session_name: 2 to 64 letters"),
])
def test_role_refusals(tmp_path: Path, toml: str, message: str) -> None:
    got = errors(tmp_path, toml)
    assert len(got) == 1 and message in got[0], got


# --- verify ---------------------------------------------------------------------------------------

def test_verify_forms(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    config = load(tmp_path, f"""\
        [cache]
        dir = "{tmp_path / 'cache'}"
        [[s3.credentials]]
        host = "minio:9000"
        verify = "https://127.0.0.1:1/ca.crt"
        [[s3.credentials]]
        host = "other:9000"
        verify = "{tmp_path / 'ca.pem'}"
        [[s3.credentials]]
        host = "off:9000"
        verify = false
        """)  # the URL is not fetched: nothing listens on port 1
    url = settings(config, "s3://minio:9000/bkt")
    assert url.verify == "https://127.0.0.1:1/ca.crt" and url.ca_dir == str(tmp_path / "cache" / "ca-bundles")
    assert settings(config, "s3://other:9000/bkt").verify == str(tmp_path / "ca.pem")
    assert settings(config, "s3://off:9000/bkt").verify is False


@pytest.mark.parametrize(("verify", "message"), [
    ('"/no/such/ca.pem"', "s3.credentials[0].verify: no CA bundle file at /no/such/ca.pem"),
    ('"http://example.com/ca.pem"', "s3.credentials[0].verify: a CA bundle fetched over plain http"),
    ("3", "s3.credentials[0].verify: expected true, false, a CA bundle path or its https:// URL"),
])
def test_verify_refusals(tmp_path: Path, verify: str, message: str) -> None:
    got = errors(tmp_path, f'[[s3.credentials]]\nhost = "h:1"\nverify = {verify}')
    assert len(got) == 1 and message in got[0], got


# --- upload concurrency -------------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "expected"), [
    ("", 8),  # [write]'s default
    ("[write]\nmax_concurrency = 3", 3),
    ("[s3.boto3]\nmax_multipart_concurrency = 16", 16),
    ("[write]\nmax_concurrency = 3\n[s3.boto3]\nmax_multipart_concurrency = 5", 5),  # the store's own wins
])
def test_max_multipart_concurrency_is_the_stores_upload_concurrency(tmp_path: Path, toml: str,
                                                                    expected: int) -> None:
    config = load(tmp_path, toml)
    store = S3Store(settings(config, "s3://bkt"), config.retry)
    journal = UploadJournal(str(tmp_path / "journal"))
    try:
        uploader = Uploader(AsyncStore(store, 4), journal, config.write)
        assert uploader.max_concurrency == expected
        plain = Uploader(AsyncStore(MemoryStore(), 4), journal, WriteConfig(max_concurrency=3))
        assert plain.max_concurrency == 3
    finally:
        journal.close()


def test_the_stores_threads_are_enough_for_the_parts_of_its_uploads(tmp_path: Path) -> None:
    """Reads and uploads share the store's threads: 16 parts in flight need 16 of them, not the 8
    of [read] max_concurrency."""
    from mountfs.mount import make_roots

    config = load(tmp_path, f'[cache]\ndir = "{tmp_path / "cache"}"\n'
                            "[s3.boto3]\nmax_multipart_concurrency = 16")
    stores = [S3Store(settings(config, "s3://bkt"), config.retry)]
    journal = UploadJournal(str(tmp_path / "journal"))
    try:
        (root,) = make_roots(config, stores, journal)
        assert root.store._run.slots.total == 16
        (read_only,) = make_roots(config, stores, None)
        assert read_only.store._run.slots.total == config.read.max_concurrency
    finally:
        journal.close()


def test_pool_connections_reach_botocore(tmp_path: Path) -> None:
    config = load(tmp_path, "[s3.boto3]\npool_connections = 7")
    store = S3Store(settings(config, "s3://bkt"), config.retry)
    assert store.client.meta.config.max_pool_connections == 7


# --- region --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "url", "asks"), [
    ('[s3]\nregion = ""', "s3://bkt", True),  # ClearML's default: blank
    ("", "s3://bkt", True),
    ('[s3]\nregion = "eu-west-1"', "s3://bkt", False),
    ('[s3]\nregion = ""\n[[s3.credentials]]\nbucket = "bkt"\nregion = "eu-west-2"', "s3://bkt", False),
    ('[s3]\nregion = ""', "s3://minio:9000/bkt", False),  # an endpoint of its own: its default
    ('[s3]\nregion = ""\nendpoint = "http://127.0.0.1:9000"', "s3://bkt", False),
])
def test_a_blank_region_on_aws_asks_the_bucket(tmp_path: Path, toml: str, url: str, asks: bool) -> None:
    assert settings(load(tmp_path, toml), url).ask_region is asks


def test_a_wrong_region_answer_names_the_buckets_region() -> None:
    """AWS answers a HeadBucket in the wrong region with 301 (or 403 without the right) and the
    bucket's region in x-amz-bucket-region: not an error, the answer (a fault moto cannot make)."""
    import boto3
    from botocore.stub import Stubber

    from mountfs.backends.s3 import _bucket_region

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(client) as stub:
        for status in (301, 403):
            stub.add_client_error("head_bucket", str(status), http_status_code=status,
                                  response_meta={"HTTPHeaders": {"x-amz-bucket-region": "ap-south-1"}})
        assert _bucket_region(client, "bkt") == "ap-south-1"
        assert _bucket_region(client, "bkt") == "ap-south-1"
        stub.add_client_error("head_bucket", "404", http_status_code=404)
        assert _bucket_region(client, "bkt") is None


def test_the_seeds_s3_blocks_load(tmp_path: Path) -> None:
    """clearml-storage.md's S3 blocks in mountfs's TOML: every key is honoured."""
    text = (Path(__file__).parent.parent / "data" / "seeds" / "s3-clearml-aws.toml").read_text()
    (tmp_path / "c.toml").write_text(text + MOUNT)
    config = load_config(str(tmp_path / "c.toml"))
    default = settings(config, "s3://other-bucket")
    assert (default.key, default.ask_region, default.extra_args, default.upload_concurrency,
            default.pool_connections) == ("default-key", True, S3ExtraArgs(), 16, 512)
    assert settings(config, "s3://my-bucket-name").key == "bucket-key"
    minio = settings(config, "s3://my-minio-host:9000/data")
    assert (minio.key, minio.multipart, minio.endpoint_url, minio.verify, minio.ask_region) == (
        "minio-key", False, "http://my-minio-host:9000", "https://url/of/ca/bundle.crt", False)
