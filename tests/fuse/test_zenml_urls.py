"""Every artifact-store URI of ZenML's document mounts as SOURCE, with the account from the environment's
connection string (as ZenML and adlfs take it); Supervisely's fs://storage-id mounts its mapped folder; a
legacy S3 bucket name (upper case, "_") mounts where its store takes it, or fails with the store's answer
where it does not."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY, Emulator, S3Server

if TYPE_CHECKING:
    from conftest import Mounter

MODEL = b"a model written by a ZenML run\n"


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def connection_string(azurite: Emulator) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={azurite.endpoint};")


@pytest.fixture
def artifacts(azurite: Emulator) -> str:
    name = f"zenml-{uuid.uuid4().hex[:12]}"
    azurite.create_bucket(name)
    container = azurite.azure_client().get_container_client(name)
    container.upload_blob("runs/1/model.bin", MODEL)
    container.upload_blob("runs/1/params.json", b"{}")
    return name


def test_every_zenml_azure_uri_mounts(mounter: Mounter, azurite: Emulator, artifacts: str) -> None:
    env = {k: v for k, v in mounter.run.env.items() if not k.startswith("AZURE_STORAGE_")}
    env |= {"AZURE_STORAGE_CONNECTION_STRING": connection_string(azurite)}
    mounter.run = dataclasses.replace(mounter.run, env=env)
    for uri in (f"az://{artifacts}/runs",
                f"abfs://{artifacts}/runs",
                f"abfs://{artifacts}@{AZURITE_ACCOUNT}/runs",
                f"abfss://{artifacts}@{AZURITE_ACCOUNT}.dfs.core.windows.net/runs",
                f"https://{AZURITE_ACCOUNT}.blob.core.windows.net/{artifacts}/runs",
                f"{azurite.endpoint}/{artifacts}/runs"):  # the account URL of the connection string
        mnt = mounter.mount(uri)
        assert sorted(os.listdir(mnt.join("1"))) == ["model.bin", "params.json"], uri
        assert read(mnt.join("1", "model.bin")) == MODEL, uri
        mounter.umount(mnt)


def test_an_ambiguous_or_accountless_uri_is_one_line(mounter: Mounter, tmp_path: Path) -> None:
    env = {k: v for k, v in mounter.run.env.items() if not k.startswith("AZURE_STORAGE_")}
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = mounter.run("az://artifacts/zenml/run1", mnt, env=env)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(
        'mountfs: az://artifacts/zenml/run1: "az://artifacts/zenml/run1" names no storage account: container '
        '"artifacts" of which account? (or account "artifacts", container "zenml"'), result.stderr
    assert "az://artifacts@ACCOUNT/zenml/run1 or az://zenml@artifacts/run1" in result.stderr
    env["AZURE_STORAGE_ACCOUNT"] = "artifacts"
    result = mounter.run("az://artifacts/zenml/run1", mnt, env=env)
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert 'is ambiguous: container "artifacts" of account "artifacts"' in result.stderr


def s3_settings(tmp_path: Path, server: S3Server) -> str:
    settings = tmp_path / "s3.toml"
    settings.write_text(f'[[s3.credentials]]\nhost = "{server.host_port}"\nkey = "{server.access_key}"\n'
                        f'secret = "{server.secret_key}"\nsecure = false\n')
    return str(settings)


def test_a_legacy_bucket_name_mounts_path_style(mounter: Mounter, moto: S3Server, tmp_path: Path) -> None:
    """Supervisely's seed names the bucket cars_2020_20_10: moto, like AWS for legacy buckets, takes it."""
    bucket = f"Cars_2020_{uuid.uuid4().hex[:8]}"
    moto.create_bucket(bucket)
    moto.client().put_object(Bucket=bucket, Key="truck.jpg", Body=b"a truck")
    mnt = mounter.mount(f"s3://{moto.host_port}/{bucket}", f"config={s3_settings(tmp_path, moto)}")
    assert os.listdir(mnt.path) == ["truck.jpg"]
    assert read(mnt.join("truck.jpg")) == b"a truck"


def test_a_store_that_refuses_a_legacy_name_answers_with_it(mounter: Mounter, seaweedfs: S3Server,
                                                           tmp_path: Path) -> None:
    """SeaweedFS creates no bucket named so: the mount fails with its answer, naming the bucket."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = mounter.run(f"s3://{seaweedfs.host_port}/cars_2020_20_10", mnt, "-o",
                         f"config={s3_settings(tmp_path, seaweedfs)},cache_dir={tmp_path / 'cache'}")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "bucket cars_2020_20_10 does not exist at" in result.stderr, result.stderr


def test_a_supervisely_fs_link_mounts_its_folder(mounter: Mounter, tmp_path: Path) -> None:
    """fs://storage-id/path is served from the folder [[path_substitution]] maps the storage id to."""
    folder = tmp_path / "datasets"
    (folder / "persons").mkdir(parents=True)
    (folder / "persons" / "image1.jpg").write_bytes(b"a person")
    settings = tmp_path / "links.toml"
    settings.write_text(f'[[path_substitution]]\nregistered_prefix = "fs://local-datasets"\n'
                        f'local_prefix = "file://{folder}"\n')
    mnt = mounter.mount("fs://local-datasets/persons", f"config={settings}")
    assert os.listdir(mnt.path) == ["image1.jpg"]
    assert read(mnt.join("image1.jpg")) == b"a person"
