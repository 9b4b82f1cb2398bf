"""`mountfs modelkit: MNT`: modelkit's own environment variables mount its bucket and prefix on S3
(SeaweedFS), GCS (fake-gcs-server), Azure (Azurite) and a local folder, and the pre-downloaded assets
folder read-only, each reading a known asset file."""

from __future__ import annotations

import dataclasses
import errno
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY, Emulator, S3Server

if TYPE_CHECKING:
    from conftest import Mount, Mounter

PREFIX = "modelkit/assets"
ASSET = "my_model/0.0"  # modelkit's object name: PREFIX/name/version
DATA = b"weights of my_model 0.0\n"
MODELKIT = ("MODELKIT_STORAGE_PROVIDER", "MODELKIT_STORAGE_BUCKET", "MODELKIT_STORAGE_PREFIX",
            "MODELKIT_ASSETS_DIR", "S3_ENDPOINT", "AWS_KMS_KEY_ID", "AZURE_STORAGE_CONNECTION_STRING",
            "STORAGE_EMULATOR_HOST", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


def mount_modelkit(mounter: Mounter, variables: dict[str, str], *, cache_local: bool = True) -> Mount:
    """`mountfs modelkit: MNT` with modelkit's variables set (and no others) for the daemon."""
    env = {k: v for k, v in mounter.run.env.items() if k not in MODELKIT}
    env.update(variables)
    mounter.run = dataclasses.replace(mounter.run, env=env)  # this test's mounter only
    return mounter.mount("modelkit:", cache_local=cache_local)


def read(mount: Mount) -> bytes:
    with open(mount.join(ASSET), "rb") as f:
        return f.read()


def test_s3(mounter: Mounter, seaweedfs: S3Server) -> None:
    bucket = f"mk-{uuid.uuid4().hex[:8]}"
    seaweedfs.create_bucket(bucket)
    seaweedfs.client().put_object(Bucket=bucket, Key=f"{PREFIX}/{ASSET}", Body=DATA)
    mount = mount_modelkit(mounter, {
        "MODELKIT_STORAGE_PROVIDER": "s3", "MODELKIT_STORAGE_BUCKET": bucket,
        "MODELKIT_STORAGE_PREFIX": PREFIX,
        "S3_ENDPOINT": seaweedfs.endpoint, "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
    })  # fmt: skip
    assert read(mount) == DATA
    assert os.listdir(mount.path) == ["my_model"]


def test_s3_with_a_profile(mounter: Mounter, seaweedfs: S3Server, tmp_path: Path) -> None:
    """modelkit's page: "AWS_DEFAULT_PROFILE, AWS_DEFAULT_REGION and valid credentials in ~/.aws is
    enough"."""
    bucket = f"mk-{uuid.uuid4().hex[:8]}"
    seaweedfs.create_bucket(bucket)
    seaweedfs.client().put_object(Bucket=bucket, Key=f"modelkit-assets/{ASSET}", Body=DATA)
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[mk]\naws_access_key_id = {seaweedfs.access_key}\n"
                           f"aws_secret_access_key = {seaweedfs.secret_key}\n")
    mount = mount_modelkit(mounter, {
        "MODELKIT_STORAGE_PROVIDER": "s3", "MODELKIT_STORAGE_BUCKET": bucket,
        "S3_ENDPOINT": seaweedfs.endpoint, "AWS_DEFAULT_PROFILE": "mk", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(tmp_path / "none"),
    })  # fmt: skip
    assert read(mount) == DATA


def test_gcs(mounter: Mounter, fake_gcs: Emulator) -> None:
    bucket = f"mk-{uuid.uuid4().hex[:8]}"
    fake_gcs.create_bucket(bucket)
    fake_gcs.gcs_client().bucket(bucket).blob(f"{PREFIX}/{ASSET}").upload_from_string(DATA)
    mount = mount_modelkit(mounter, {
        "MODELKIT_STORAGE_PROVIDER": "gcs", "MODELKIT_STORAGE_BUCKET": bucket,
        "MODELKIT_STORAGE_PREFIX": PREFIX,
        "STORAGE_EMULATOR_HOST": fake_gcs.endpoint,
    })  # fmt: skip
    assert read(mount) == DATA


def test_az(mounter: Mounter, azurite: Emulator) -> None:
    container = f"mk-{uuid.uuid4().hex[:8]}"
    azurite.create_bucket(container)
    azurite.azure_client().get_container_client(container).upload_blob(f"{PREFIX}/{ASSET}", DATA)
    connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                  f"BlobEndpoint={azurite.endpoint};")
    mount = mount_modelkit(mounter, {
        "MODELKIT_STORAGE_PROVIDER": "az", "MODELKIT_STORAGE_BUCKET": container,
        "MODELKIT_STORAGE_PREFIX": PREFIX, "AZURE_STORAGE_CONNECTION_STRING": connection,
    })  # fmt: skip
    assert read(mount) == DATA


def test_local_provider_is_the_bucket_folder_and_prefix(mounter: Mounter, tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / PREFIX / "my_model").mkdir(parents=True)
    (store / PREFIX / ASSET).write_bytes(DATA)
    (store / "outside.txt").write_bytes(b"not under the prefix")
    mount = mount_modelkit(mounter, {
        "MODELKIT_STORAGE_PROVIDER": "local", "MODELKIT_STORAGE_BUCKET": str(store),
        "MODELKIT_STORAGE_PREFIX": PREFIX,
    }, cache_local=False)  # fmt: skip
    assert read(mount) == DATA
    assert os.listdir(mount.path) == ["my_model"]
    with open(mount.join("my_model", "0.1"), "wb") as f:  # a developer pushes a new version
        f.write(b"new")
    assert (store / PREFIX / "my_model" / "0.1").read_bytes() == b"new"


def test_pre_downloaded_assets_mount_read_only(mounter: Mounter, tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    (assets / "my_model").mkdir(parents=True)
    (assets / ASSET).write_bytes(DATA)
    mount = mount_modelkit(mounter, {"MODELKIT_ASSETS_DIR": str(assets), "MODELKIT_STORAGE_PROVIDER": ""},
                           cache_local=False)
    assert read(mount) == DATA
    with pytest.raises(OSError) as info:
        open(mount.join("my_model", "0.1"), "wb").close()
    assert info.value.errno == errno.EROFS
    assert sorted(os.listdir(assets / "my_model")) == ["0.0"]


def test_missing_variables_fail_the_mount_with_their_names(mounter: Mounter) -> None:
    env = {k: v for k, v in mounter.run.env.items() if k not in MODELKIT}
    env["MODELKIT_STORAGE_PROVIDER"] = "az"
    result = mounter.run("modelkit:", mounter.fresh_dir("mnt"), env=env, timeout=60)
    assert result.returncode != 0
    assert "MODELKIT_STORAGE_BUCKET: is not set; MODELKIT_STORAGE_PROVIDER=az needs it" in result.stderr
    assert "AZURE_STORAGE_CONNECTION_STRING: is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_kms_key_encrypts_what_is_written(mounter: Mounter, moto: S3Server) -> None:
    """AWS_KMS_KEY_ID: modelkit uploads with ServerSideEncryption aws:kms and that key; so do writes
    through the mount."""
    bucket = f"mk-{uuid.uuid4().hex[:8]}"
    moto.create_bucket(bucket)
    key_id = "arn:aws:kms:us-east-1:123456789012:key/modelkit-test"
    mount = mount_modelkit(mounter, {
        "MODELKIT_STORAGE_PROVIDER": "s3", "MODELKIT_STORAGE_BUCKET": bucket, "S3_ENDPOINT": moto.endpoint,
        "AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_KMS_KEY_ID": key_id,
    })  # fmt: skip
    os.makedirs(mount.join("my_model"), exist_ok=True)
    with open(mount.join(ASSET), "wb") as f:
        f.write(DATA)
    mounter.umount(mount)  # every upload done
    head = moto.client().head_object(Bucket=bucket, Key=f"modelkit-assets/{ASSET}")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("modelkit-test")
