"""When a mount finds no credentials, the hint names the keys of the file the settings came from (a
clearml.conf, a Supervisely .env or remote_links.yml, modelkit's variables), not mountfs's own
sections, and never a secret's value. Nothing listens on 127.0.0.1:1: the credentials are missing
before any request is sent (Google's endpoint is never reached either)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mountfs.mount import MountSetupError, parse_options, prepare

SECRET = "sekrit-value-never-shown"


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No AWS or Google credentials anywhere boto3's or google-auth's chain looks; a mount point."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT",
                 "MODELKIT_STORAGE_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no application default credentials
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return mnt


def mount_error(tmp_path: Path, source: str, mnt: Path, config: Path | None = None) -> str:
    options = [f"cache_dir={tmp_path / 'cache'}"] + ([f"config={config}"] if config else [])
    with pytest.raises(MountSetupError) as exc:
        prepare(source, str(mnt), parse_options(options))
    message = str(exc.value)
    assert "no credentials found" in message or "no Google credentials found" in message, message
    assert "[s3]" not in message and "[gcs]" not in message and "[[" not in message, message
    assert SECRET not in message
    return message


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_clearml_conf_hint_names_its_keys(tmp_path: Path, no_credentials: Path) -> None:
    conf = write(tmp_path / "clearml.conf", """
        sdk.aws.s3 { key: "", secret: "", region: "us-east-1" }
        sdk.google.storage { project: "p" }
    """)
    message = mount_error(tmp_path, "s3://127.0.0.1:1/bucket", no_credentials, conf)
    assert (f"set sdk.aws.s3.key and sdk.aws.s3.secret in {conf}, or add "
            '{ host: "127.0.0.1:1", key: ..., secret: ... } to sdk.aws.s3.credentials') in message
    assert "use_credentials_chain: true" in message
    message = mount_error(tmp_path, "gs://gbucket/x", no_credentials, conf)
    assert (f"set sdk.google.storage.credentials_json in {conf}, or add "
            '{ bucket: "gbucket", credentials_json: "/path/key.json" } to sdk.google.storage.credentials'
            ) in message


def test_clearml_conf_hint_names_the_entry_used(tmp_path: Path, no_credentials: Path) -> None:
    """The seed's non-AWS host block without its key: the hint names that entry; its bucket mounted."""
    conf = write(tmp_path / "clearml.conf", f"""
        sdk {{
            aws.s3.credentials: [
                {{ host: "127.0.0.1:1", secure: false, multipart: false }}
                {{ bucket: "chained", host: "127.0.0.1:1", secure: false, use_credentials_chain: true }}
            ]
            azure.storage.containers: [ {{ account_name: "acct", account_key: "{SECRET}" }} ]
        }}
    """)
    message = mount_error(tmp_path, "s3://127.0.0.1:1/bucket", no_credentials, conf)
    assert f"set key and secret in sdk.aws.s3.credentials[0] in {conf}" in message
    message = mount_error(tmp_path, "s3://127.0.0.1:1/chained", no_credentials, conf)
    assert f"sdk.aws.s3.credentials[1].use_credentials_chain is true in {conf}" in message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE" in message


def test_supervisely_env_hint_names_its_variables(tmp_path: Path, no_credentials: Path) -> None:
    env = write(tmp_path / ".env", """
        STORAGE_PROVIDER=minio
        STORAGE_ENDPOINT=127.0.0.1
        STORAGE_PORT=1
    """)
    message = mount_error(tmp_path, str(env), no_credentials)
    assert f"set STORAGE_ACCESS_KEY and STORAGE_SECRET_KEY in {env}, or STORAGE_IAM_ROLE" in message
    role = write(tmp_path / "role.env", "STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=127.0.0.1\nSTORAGE_PORT=1\n"
                 "STORAGE_IAM_ROLE=reader\n")
    message = mount_error(tmp_path, str(role), no_credentials)
    assert f"STORAGE_IAM_ROLE is set in {role}: the instance's role" in message
    google = write(tmp_path / "google.env",
                   "STORAGE_PROVIDER=google\nSTORAGE_ENDPOINT=storage.googleapis.com\n")
    message = mount_error(tmp_path, str(google), no_credentials)
    assert f"set STORAGE_CREDENTIALS_PATH (the key file) in {google}" in message


def test_remote_links_yml_hint_names_its_storage(tmp_path: Path, no_credentials: Path) -> None:
    yml = write(tmp_path / "remote_links.yml", """
        my-minio:
          provider: minio
          endpoint: 127.0.0.1
          port: 1
          buckets: [cars]
        my-planes:
          provider: google
          buckets: [planes]
    """)
    message = mount_error(tmp_path, "s3://127.0.0.1:1/cars", no_credentials, yml)
    assert f"set access_key and secret_key of my-minio in {yml}, or iam_role" in message
    message = mount_error(tmp_path, "s3://127.0.0.1:1/other", no_credentials, yml)
    assert (f'add a minio storage with "other" in its buckets, and its access_key and secret_key, '
            f"to {yml}") in message
    message = mount_error(tmp_path, "gs://planes", no_credentials, yml)
    assert (f'set credentials_path (the key file) of the google storage that lists "planes" '
            f"in {yml}") in message


def test_links_file_alone_hint_says_to_name_the_settings(tmp_path: Path, no_credentials: Path) -> None:
    links = write(tmp_path / "links.txt", "google://planes/a.jpg\n")
    message = mount_error(tmp_path, str(links), no_credentials)
    assert "name the Supervisely .env or remote_links.yml that has them: -o config=FILE" in message


def test_modelkit_hint_names_its_variables(tmp_path: Path, no_credentials: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_STORAGE_PROVIDER", "s3")
    monkeypatch.setenv("MODELKIT_STORAGE_BUCKET", "assets")
    monkeypatch.setenv("S3_ENDPOINT", "http://127.0.0.1:1")
    message = mount_error(tmp_path, "modelkit:", no_credentials)
    assert ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the environment of "
            "`mountfs modelkit:`") in message
    monkeypatch.setenv("MODELKIT_STORAGE_PROVIDER", "gcs")
    message = mount_error(tmp_path, "modelkit:", no_credentials)
    assert "set GOOGLE_APPLICATION_CREDENTIALS (the key file) in the environment of `mountfs modelkit:`" in (
        message)


def test_own_toml_keeps_naming_mountfs_sections(tmp_path: Path, no_credentials: Path) -> None:
    toml = write(tmp_path / "m.toml", '[[mount]]\npath = ""\nurl = "s3://127.0.0.1:1/bucket"\n')
    with pytest.raises(MountSetupError, match=r"no credentials found \(set key and secret in \[s3\]"):
        prepare(str(toml), str(no_credentials), parse_options([f"cache_dir={tmp_path / 'cache'}"]))
