"""A clearml.conf mounts as it is: the seeds' own blocks (tests/data/seeds/clearml-*.conf, with the
test servers' names and keys put in) against SeaweedFS and fake-gcs-server, each reading a known file,
as SOURCE (every bucket it names, at s3/..., gs/...), through `-o config=FILE` or `-o config=clearml`
for one URL, and through the TOML `mountfs config import` prints, which gives the same tree.

Azure: a clearml.conf has no endpoint key; the account's endpoint (Azurite's) comes from the
environment's connection string, the key from the block."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import Emulator, S3Server

if TYPE_CHECKING:
    from conftest import Mounter

SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"
FILES = {"hello.txt": b"hello from clearml.conf\n", "runs/1/model.bin": os.urandom(300_000)}


def seed_copy(name: str, tmp_path: Path, **replace: str) -> Path:
    """The seed file with its example names and keys replaced by the test servers' own."""
    text = (SEEDS / f"clearml-{name}.conf").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.conf"
    path.write_text(text)
    return path


def walk(root: str) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def clean_environment(base: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """`base` without the machine's AWS and Google settings, shared AWS files empty."""
    env = {k: v for k, v in base.items() if not k.startswith(("AWS_", "GOOGLE_", "STORAGE_EMULATOR"))}
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    env |= {"AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path)}
    return env | extra


def s3_bucket(seaweedfs: S3Server) -> str:
    name = f"clearml-{uuid.uuid4().hex[:8]}"
    seaweedfs.create_bucket(name)
    client = seaweedfs.client()
    for key, data in FILES.items():
        client.put_object(Bucket=name, Key=key, Body=data)
    return name


def imported_toml(mounter: Mounter, conf: Path, tmp_path: Path) -> Path:
    result = mounter.run("config", "import", str(conf))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "imported.toml"
    out.write_text(result.stdout)
    return out


def test_the_s3_block_mounts_its_bucket_at_s3_bucket(mounter: Mounter, seaweedfs: S3Server,
                                                     tmp_path: Path) -> None:
    bucket = s3_bucket(seaweedfs)
    conf = seed_copy("s3", tmp_path, **{"my-bucket-name": bucket, "AKIABUCKETEXAMPLE": seaweedfs.access_key,
                                        "bucket-secret-example": seaweedfs.secret_key})
    mounter.run = dataclasses.replace(mounter.run, env=clean_environment(
        mounter.run.env, tmp_path, AWS_ENDPOINT_URL_S3=seaweedfs.endpoint))
    mnt = mounter.mount(conf)
    assert os.listdir(mnt.path) == ["s3"] and os.listdir(mnt.join("s3")) == [bucket]
    with open(mnt.join("s3", bucket, "hello.txt"), "rb") as f:
        assert f.read() == FILES["hello.txt"]
    tree = walk(mnt.path)
    assert tree[f"s3/{bucket}/runs/1/model.bin"] == FILES["runs/1/model.bin"]

    again = mounter.mount(imported_toml(mounter, conf, tmp_path))
    assert walk(again.path) == tree, "the imported TOML gives the same tree"


def test_a_url_takes_its_settings_from_the_host_entry_by_o_config(mounter: Mounter, seaweedfs: S3Server,
                                                                  tmp_path: Path) -> None:
    """The non-AWS block: key, secret and secure false for s3://host:port/... URLs."""
    bucket = s3_bucket(seaweedfs)
    conf = seed_copy("minio", tmp_path, **{"my-minio-host:9000": seaweedfs.host_port,
                                           "minio-key": seaweedfs.access_key,
                                           "minio-secret": seaweedfs.secret_key})
    mounter.run = dataclasses.replace(mounter.run, env=clean_environment(mounter.run.env, tmp_path))
    url = f"s3://{seaweedfs.host_port}/{bucket}/runs"
    mnt = mounter.mount(url, f"config={conf}")
    with open(mnt.join("1", "model.bin"), "rb") as f:
        assert f.read() == FILES["runs/1/model.bin"]
    [store] = mounter.run.status(mnt)["stores"]
    assert store["endpoint"] == f"http://{seaweedfs.host_port}"  # secure: false

    # -o config=clearml: CLEARML_CONFIG_FILE, as ClearML finds it
    mounter.run = dataclasses.replace(mounter.run, env={**mounter.run.env, "CLEARML_CONFIG_FILE": str(conf)})
    by_name = mounter.mount(url, "config=clearml")
    assert walk(by_name.path) == walk(mnt.path)


def test_o_config_clearml_finds_home_clearml_conf(mounter: Mounter, seaweedfs: S3Server,
                                                  tmp_path: Path) -> None:
    bucket = s3_bucket(seaweedfs)
    seed_copy("minio-tls", tmp_path, **{"my-minio-host:9000": seaweedfs.host_port,
                                        "minio-key": seaweedfs.access_key,
                                        "minio-secret": seaweedfs.secret_key,
                                        "secure: true": "secure: false"}).rename(tmp_path / "clearml.conf")
    mounter.run = dataclasses.replace(mounter.run, env=clean_environment(mounter.run.env, tmp_path))
    mnt = mounter.mount(f"s3://{seaweedfs.host_port}/{bucket}", "config=clearml")
    with open(mnt.join("hello.txt"), "rb") as f:
        assert f.read() == FILES["hello.txt"]


def test_the_host_block_as_source_mounts_every_bucket_of_the_host(mounter: Mounter, seaweedfs: S3Server,
                                                                  tmp_path: Path) -> None:
    bucket = s3_bucket(seaweedfs)
    conf = seed_copy("minio", tmp_path, **{"my-minio-host:9000": seaweedfs.host_port,
                                           "minio-key": seaweedfs.access_key,
                                           "minio-secret": seaweedfs.secret_key})
    mounter.run = dataclasses.replace(mounter.run, env=clean_environment(mounter.run.env, tmp_path))
    mnt = mounter.mount(conf)
    with open(mnt.join("s3", seaweedfs.host_port, bucket, "hello.txt"), "rb") as f:
        assert f.read() == FILES["hello.txt"]
    again = mounter.mount(imported_toml(mounter, conf, tmp_path))
    with open(again.join("s3", seaweedfs.host_port, bucket, "runs", "1", "model.bin"), "rb") as f:
        assert f.read() == FILES["runs/1/model.bin"], "the imported TOML gives the same tree"
    assert sorted(os.listdir(again.join("s3", seaweedfs.host_port))) == sorted(
        os.listdir(mnt.join("s3", seaweedfs.host_port)))


def service_account_key(token_uri: str) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "clearml-test", "private_key_id": "1",
            "private_key": pem, "client_email": "mountfs@clearml-test.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": token_uri}


class _TokenHandler(BaseHTTPRequestHandler):
    """Google's token endpoint, as far as a service account key needs it: any grant gets a token."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"access_token": "test-token", "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def token_uri() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


def test_the_google_block_mounts_its_bucket_subdir_at_gs(mounter: Mounter, fake_gcs: Emulator,
                                                         tmp_path: Path, token_uri: str) -> None:
    """credentials_json names a key file (a service account key whose token endpoint is local);
    STORAGE_EMULATOR_HOST names fake-gcs-server, as the Google SDK reads it."""
    bucket = f"clearml-{uuid.uuid4().hex[:8]}"
    fake_gcs.create_bucket(bucket)
    client = fake_gcs.gcs_client().bucket(bucket)
    for key, data in FILES.items():
        client.blob(f"path/in/bucket/{key}").upload_from_string(data)
    client.blob("outside.txt").upload_from_string(b"not under subdir")
    key_file = tmp_path / "credentials.json"
    key_file.write_text(json.dumps(service_account_key(token_uri)))
    conf = seed_copy("gcs", tmp_path, **{"my-gcs-bucket": bucket, "/path/to/credentials.json": str(key_file)})
    mounter.run = dataclasses.replace(mounter.run, env=clean_environment(
        mounter.run.env, tmp_path, STORAGE_EMULATOR_HOST=fake_gcs.endpoint))
    mnt = mounter.mount(conf)
    root = mnt.join("gs", bucket, "path", "in", "bucket")
    with open(os.path.join(root, "hello.txt"), "rb") as f:
        assert f.read() == FILES["hello.txt"]
    tree = walk(mnt.path)
    assert tree[f"gs/{bucket}/path/in/bucket/runs/1/model.bin"] == FILES["runs/1/model.bin"]
    assert not any(k.endswith("outside.txt") for k in tree)

    again = mounter.mount(imported_toml(mounter, conf, tmp_path))
    assert walk(again.path) == tree, "the imported TOML gives the same tree"


def test_the_azure_block_gives_its_key_to_a_container_url(mounter: Mounter, azurite: Emulator,
                                                         tmp_path: Path) -> None:
    """The seed's Azure block (container_name commented out: the whole account) with a ZenML-style
    URL of a container; the account's endpoint (Azurite's) comes from the environment's connection
    string, as a clearml.conf has no endpoint key, and the key from the block."""
    container = f"clearml-{uuid.uuid4().hex[:8]}"
    azurite.create_bucket(container)
    azurite.azure_client().get_container_client(container).upload_blob("runs/1/model.bin",
                                                                        FILES["runs/1/model.bin"])
    conf = seed_copy("azure", tmp_path)
    env = {k: v for k, v in mounter.run.env.items() if not k.startswith("AZURE_STORAGE_")}
    env["AZURE_STORAGE_CONNECTION_STRING"] = (  # where the account lives; a wrong key, to be overridden
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={'A' * 86}==;"
        f"BlobEndpoint={azurite.endpoint};")
    mounter.run = dataclasses.replace(mounter.run, env=env)
    mnt = mounter.mount(f"az://{container}/runs", f"config={conf}")
    with open(mnt.join("1", "model.bin"), "rb") as f:
        assert f.read() == FILES["runs/1/model.bin"]
    [store] = mounter.run.status(mnt)["stores"]
    assert store["endpoint"].startswith(azurite.endpoint.rstrip("/"))


def test_path_substitution_and_cache_dir_of_o_config_serve_a_url(mounter: Mounter, tmp_path: Path) -> None:
    """The seed's path_substitution and cache blocks given with -o config= to a URL: the registered
    prefix is read from the local folder (no store is asked), and the cache lives where
    default_base_dir says (no cache_dir option given)."""
    shared = tmp_path / "shared"
    (shared / "bucket" / "research" / "runs").mkdir(parents=True)
    (shared / "bucket" / "research" / "runs" / "metrics.json").write_bytes(b'{"acc": 0.9}')
    conf = seed_copy("path-substitution", tmp_path, **{"file:///mnt/shared": f"file://{shared}"})
    cache_dir = tmp_path / "clearml-cache"
    conf.write_text(conf.read_text() + f'sdk.storage.cache.default_base_dir: "{cache_dir}"\n')
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = mounter.run("s3://bucket/research", str(mnt), "-o", f"config={conf}")
    mounter.track(str(mnt))
    assert result.returncode == 0, result.stderr
    with open(mnt / "runs" / "metrics.json", "rb") as f:
        assert f.read() == b'{"acc": 0.9}'
    assert mounter.run.status(mnt)["cache"]["dir"] == str(cache_dir)
    mounter.umount(str(mnt))


def test_the_azure_block_with_its_container_name_as_source_mounts_azure_account_container(
        mounter: Mounter, azurite: Emulator, tmp_path: Path) -> None:
    """The seed's Azure block with its commented container_name written in: SOURCE mounts it at
    azure/ACCOUNT/CONTAINER, as ClearML names the URL; the imported TOML gives the same tree."""
    container = f"clearml-{uuid.uuid4().hex[:8]}"
    azurite.create_bucket(container)
    azurite.azure_client().get_container_client(container).upload_blob("runs/1/model.bin",
                                                                        FILES["runs/1/model.bin"])
    conf = seed_copy("azure", tmp_path, **{"# container_name:": f'container_name: "{container}"'})
    env = {k: v for k, v in mounter.run.env.items() if not k.startswith("AZURE_STORAGE_")}
    env["AZURE_STORAGE_CONNECTION_STRING"] = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={'A' * 86}==;"
        f"BlobEndpoint={azurite.endpoint};")
    mounter.run = dataclasses.replace(mounter.run, env=env)
    mnt = mounter.mount(conf)
    tree = walk(mnt.path)
    assert tree[f"azure/devstoreaccount1/{container}/runs/1/model.bin"] == FILES["runs/1/model.bin"]
    again = mounter.mount(imported_toml(mounter, conf, tmp_path))
    assert walk(again.path) == tree, "the imported TOML gives the same tree"
