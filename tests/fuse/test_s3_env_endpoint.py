"""One endpoint per S3 store: a bucket named only by `s3://bucket`, on a server named only by the
environment (as `aws` and boto3 users name it), is read, listed and written there, never at AWS."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from tests.servers import S3Server

if TYPE_CHECKING:
    from conftest import Mounter

MiB = 1 << 20


def aws_environment(base: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """`base` without any AWS setting of the machine (the CA bundle kept), shared files empty."""
    env = {k: v for k, v in base.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    env |= {"AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true"}
    return env | extra


def test_a_bucket_on_the_server_of_aws_endpoint_url(mounter: Mounter, seaweedfs: S3Server,
                                                    tmp_path: Path) -> None:
    seaweedfs.create_bucket("by-env")
    client = seaweedfs.client()
    model = os.urandom(3 * MiB + 5)
    client.put_object(Bucket="by-env", Key="runs/model.bin", Body=model)
    client.put_object(Bucket="by-env", Key="top.txt", Body=b"hello")
    mounter.run = dataclasses.replace(mounter.run, env=aws_environment(
        mounter.run.env, tmp_path, AWS_ENDPOINT_URL=seaweedfs.endpoint,
        AWS_ACCESS_KEY_ID=seaweedfs.access_key, AWS_SECRET_ACCESS_KEY=seaweedfs.secret_key))
    mnt = mounter.mount("s3://by-env")
    assert sorted(os.listdir(mnt.path)) == ["runs", "top.txt"]
    with open(mnt.join("runs", "model.bin"), "rb") as f:
        assert f.read() == model
    with open(mnt.join("top.txt"), "rb") as f:
        assert f.read() == b"hello"
    with open(mnt.join("runs", "new.txt"), "wb") as f:
        f.write(b"written through the mount")
    os.sync()

    status = mounter.run.status(mnt)
    [store] = status["stores"]
    assert (store["endpoint"], store["endpoint_source"]) == (seaweedfs.endpoint, "AWS_ENDPOINT_URL")
    text = mounter.run("status", mnt.path)
    assert text.returncode == 0, text.stderr
    assert f"s3://by-env at {seaweedfs.endpoint} (from AWS_ENDPOINT_URL)" in text.stdout
    mounter.umount(mnt)  # waits for the upload
    written = client.get_object(Bucket="by-env", Key="runs/new.txt")["Body"].read()
    assert written == b"written through the mount"
    assert "s3://http" not in Path(mnt.log).read_text()


def test_status_shows_the_endpoint_of_a_url_with_its_host(mounter: Mounter, moto: S3Server,
                                                          tmp_path: Path) -> None:
    moto.create_bucket("by-url")
    moto.client().put_object(Bucket="by-url", Key="a.txt", Body=b"a")
    mounter.run = dataclasses.replace(mounter.run, env=aws_environment(
        mounter.run.env, tmp_path, AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_ACCESS_KEY_ID="any", AWS_SECRET_ACCESS_KEY="any"))
    config = tmp_path / "m.toml"
    config.write_text(f'[[mount]]\npath = "m"\nurl = "s3://{moto.host_port}/by-url"\n'
                      f'[[s3.credentials]]\nhost = "{moto.host_port}"\nsecure = false\n')
    mnt = mounter.mount(config)
    with open(mnt.join("m", "a.txt"), "rb") as f:
        assert f.read() == b"a", "the URL's host:port wins over AWS_ENDPOINT_URL"
    [store] = mounter.run.status(mnt)["stores"]
    assert (store["endpoint"], store["endpoint_source"]) == (f"http://{moto.host_port}", "URL")
    result = subprocess.run(["ls", mnt.join("m")], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["a.txt"]


def test_https_to_a_plain_http_server_is_one_line_naming_secure(mounter: Mounter, seaweedfs: S3Server,
                                                                tmp_path: Path) -> None:
    """`s3://host:port/bucket` is https unless its entry says `secure = false`: against a server
    speaking plain HTTP that is one clear line, not a traceback nor a retried failure."""
    seaweedfs.create_bucket("plain")
    env = aws_environment(mounter.run.env, tmp_path, AWS_ACCESS_KEY_ID=seaweedfs.access_key,
                          AWS_SECRET_ACCESS_KEY=seaweedfs.secret_key)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    host = seaweedfs.endpoint.removeprefix("http://")
    result = mounter.run(f"s3://{host}/plain", str(mnt), "-o", f"cache_dir={tmp_path / 'cache'}", env=env,
                         timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "secure = false" in lines[0] and "Traceback" not in result.stderr, lines
    assert not os.path.ismount(mnt)
