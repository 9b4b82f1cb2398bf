"""extra_args through a real mount on moto: what cp, mv and touch write carries the configured
encryption, KMS key, storage class and metadata, as boto3's HEAD shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from tests.servers import S3Server

if TYPE_CHECKING:
    from conftest import Mounter


def test_what_the_mount_writes_carries_extra_args(mounter: Mounter, moto: S3Server, tmp_path: Path) -> None:
    bucket = f"x-{uuid.uuid4().hex[:8]}"
    moto.create_bucket(bucket)
    kms = boto3.client("kms", endpoint_url=moto.endpoint, region_name="us-east-1",
                       aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    config = tmp_path / "mountfs.toml"
    config.write_text(f"""\
[[mount]]
path = "m"
url = "s3://{moto.host_port}/{bucket}"

[write]
part_size = "5MiB"

[[s3.credentials]]
host = "{moto.host_port}"
key = "{moto.access_key}"
secret = "{moto.secret_key}"
secure = false
extra_args = {{ SSEKMSKeyId = "{key_arn}", StorageClass = "STANDARD_IA", Metadata = {{ team = "vision" }} }}
""")
    mnt = mounter.mount(str(config))
    root = mnt.join("m")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 << 20))
    shutil.copyfile(source, os.path.join(root, "big.bin"))  # multipart, uploaded by close
    assert moto.client().head_object(Bucket=bucket, Key="big.bin")["ETag"].endswith('-3"')
    with open(os.path.join(root, "small.txt"), "w") as f:  # one PUT
        f.write("small")
    os.rename(os.path.join(root, "small.txt"), os.path.join(root, "moved.txt"))  # a server copy
    subprocess.run(["touch", "-d", "2020-01-01", os.path.join(root, "big.bin")], check=True)  # in place
    mounter.umount(mnt)  # everything uploaded
    client = moto.client()
    for key in ("big.bin", "moved.txt"):
        head = client.head_object(Bucket=bucket, Key=key)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"), head.get("StorageClass")) == (
            "aws:kms", key_arn, "STANDARD_IA"), key
        assert head["Metadata"].get("team") == "vision", key
