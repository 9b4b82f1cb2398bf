"""Supervisely users mount with what they have: the instance's .env (every bucket of its storage),
remote_links.yml (every bucket it lists, as provider/bucket) and a links file (just the linked
objects, read-only, with the credentials of the .env or remote_links.yml named by -o config=)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fuse.test_clearml_conf import service_account_key, token_uri  # noqa: F401 (a fixture)
from tests.fuse.test_s3_env_endpoint import aws_environment
from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY, Emulator, S3Server

if TYPE_CHECKING:
    from conftest import Mounter

SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"


def seed_env(server: S3Server) -> str:
    """The seed's minio .env, as written, with the test server in place of AWS and its keys."""
    text = (SEEDS / "supervisely-minio.env").read_text()
    host, port = server.host_port.rsplit(":", 1)
    return (text.replace("STORAGE_ENDPOINT=s3.amazonaws.com", f"STORAGE_ENDPOINT={host}")
            .replace("STORAGE_PORT=443", f"STORAGE_PORT={port}")
            .replace("STORAGE_ACCESS_KEY=<hidden>", f"STORAGE_ACCESS_KEY={server.access_key}")
            .replace("STORAGE_SECRET_KEY=<hidden>", f"STORAGE_SECRET_KEY={server.secret_key}"))


def seed_links_yml(server: S3Server) -> str:
    """The seed's remote_links.yml, its S3 entry on the test server (a legacy bucket name in it)."""
    text = (SEEDS / "supervisely-remote_links.yml").read_text()
    host, port = server.host_port.rsplit(":", 1)
    s3_part = text.split("# azure storage example")[0]
    return (s3_part.replace("endpoint: s3.amazonaws.com", f"endpoint: {host}\n  port: {port}")
            .replace("<your access key>", server.access_key).replace("<your secret key>", server.secret_key)
            .replace("region: eu-central-1", "region: us-east-1"))


def test_the_env_file_mounts_every_bucket_of_its_storage(mounter: Mounter, seaweedfs: S3Server,
                                                         tmp_path: Path) -> None:
    for bucket in ("sv-public", "sv-private"):
        seaweedfs.create_bucket(bucket)
    client = seaweedfs.client()
    client.put_object(Bucket="sv-public", Key="images/a.jpg", Body=b"public image")
    client.put_object(Bucket="sv-private", Key="model.bin", Body=b"weights")
    env_file = tmp_path / ".env"
    env_file.write_text(seed_env(seaweedfs))
    mounter.run = dataclasses.replace(mounter.run, env=aws_environment(mounter.run.env, tmp_path))
    mnt = mounter.mount(env_file)
    assert {"sv-public", "sv-private"} <= set(os.listdir(mnt.path))
    with open(mnt.join("sv-public", "images", "a.jpg"), "rb") as f:
        assert f.read() == b"public image"
    with open(mnt.join("sv-private", "model.bin"), "rb") as f:
        assert f.read() == b"weights"
    same_tree(mnt.path, mounter.mount(imported(mounter, env_file, tmp_path)).path,
              ["sv-public/images/a.jpg", "sv-private/model.bin"])


def test_the_seed_azure_and_google_env_files_mount_their_storage(mounter: Mounter, azurite: Emulator,
                                                                  fake_gcs: Emulator, tmp_path: Path,
                                                                  token_uri: str) -> None:  # noqa: F811
    """The seed's Azure and Google .env blocks as written, their placeholders and endpoints filled
    with Azurite's and fake-gcs-server's: every container (bucket) of the storage, one directory each."""
    name = f"sv-{uuid.uuid4().hex[:8]}"
    azurite.create_bucket(name)
    azurite.azure_client().get_container_client(name).upload_blob("images/a.jpg", b"on azure")
    fake_gcs.create_bucket(name)
    fake_gcs.gcs_client().bucket(name).blob("images/a.jpg").upload_from_string(b"on google")
    key_file = tmp_path / "gcs.json"
    key_file.write_text(json.dumps(service_account_key(token_uri)))
    azure_env = tmp_path / "azure" / ".env"
    google_env = tmp_path / "google" / ".env"
    for path in (azure_env, google_env):
        path.parent.mkdir()
    azure_env.write_text((SEEDS / "supervisely-azure.env").read_text().replace(
        "STORAGE_ENDPOINT=https://<account name>.blob.core.windows.net",
        f"STORAGE_ENDPOINT={azurite.endpoint}").replace("<account name>", AZURITE_ACCOUNT)
        .replace("<secret key 88 chars long or so: aflmg+wg23fWA+6gAafWmgF4a>", AZURITE_KEY))
    google_env.write_text((SEEDS / "supervisely-google.env").read_text().replace(
        "STORAGE_ENDPOINT=storage.googleapis.com", f"STORAGE_ENDPOINT={fake_gcs.endpoint}")
        .replace("STORAGE_CREDENTIALS_PATH=/gcs.json", f"STORAGE_CREDENTIALS_PATH={key_file}"))
    env = {k: v for k, v in mounter.run.env.items()
           if not k.startswith(("AZURE_STORAGE_", "GOOGLE_", "STORAGE_EMULATOR"))}
    mounter.run = dataclasses.replace(mounter.run, env=env)
    for env_file, data in ((azure_env, b"on azure"), (google_env, b"on google")):
        mnt = mounter.mount(env_file)
        with open(mnt.join(name, "images", "a.jpg"), "rb") as f:
            assert f.read() == data, env_file
        again = mounter.mount(imported(mounter, env_file, tmp_path))
        same_tree(mnt.path, again.path, [f"{name}/images/a.jpg"])


def same_tree(direct: str, imported: str, known: list[str]) -> None:
    """The mount of the file itself and that of the TOML `config import` printed for it show the same
    names and sizes, and the same bytes in the `known` files (every bucket of a shared test server is
    in both: only a few are read)."""

    def tree(root: str) -> dict[str, int]:
        out = {}
        for folder, dirs, names in os.walk(root):
            for name in dirs + names:
                path = os.path.join(folder, name)
                out[os.path.relpath(path, root)] = -1 if name in dirs else os.stat(path).st_size
        return out

    seen = tree(direct)
    assert all(path in seen for path in known), known
    assert tree(imported) == seen, "the imported TOML gives the same tree"
    for path in known:
        with open(os.path.join(direct, path), "rb") as a, open(os.path.join(imported, path), "rb") as b:
            assert a.read() == b.read(), path


def test_remote_links_yml_mounts_provider_and_bucket(mounter: Mounter, moto: S3Server,
                                                     tmp_path: Path) -> None:
    client = moto.client()
    for bucket in ("cars_2020_20_10", "cars_2020_10_10"):
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket="cars_2020_20_10", Key="truck.jpg", Body=b"a truck")
    links_yml = tmp_path / "remote_links.yml"
    links_yml.write_text(seed_links_yml(moto))
    mounter.run = dataclasses.replace(mounter.run, env=aws_environment(mounter.run.env, tmp_path))
    mnt = mounter.mount(links_yml)
    assert sorted(os.listdir(mnt.join("s3"))) == ["cars_2020_10_10", "cars_2020_20_10"]
    with open(mnt.join("s3", "cars_2020_20_10", "truck.jpg"), "rb") as f:
        assert f.read() == b"a truck"


def test_the_seed_yml_and_links_file_mount_on_all_three_stores(mounter: Mounter, moto: S3Server,
                                                               azurite: Emulator, fake_gcs: Emulator,
                                                               tmp_path: Path, token_uri: str) -> None:  # noqa: F811
    """The seed's remote_links.yml, every entry (placeholders and endpoints filled with the test
    servers'), as SOURCE: s3/ and google/ read a known file; the seed's Azure containers
    (boats_bucket_2020_20_10) have names Azure refuses, so they are left out with Azure's answer.
    With those names made valid, azure/ reads its file too. Then the seed's links file, with that
    yml for its settings: just the linked objects."""
    s3_client = moto.client()
    for bucket in ("cars_2020_20_10", "cars_2020_10_10"):
        s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket="cars_2020_20_10", Key="truck.jpg", Body=b"a truck")
    s3_client.put_object(Bucket="cars_2020_20_10", Key="car.jpg", Body=b"not linked")
    service = azurite.azure_client()
    for container in ("boats-bucket-2020-20-10", "another-boats-bucket-2020-10-10"):
        service.get_container_client(container).create_container()
    service.get_container_client("boats-bucket-2020-20-10").upload_blob("supersonicboat.jpg", b"a boat")
    gcs = fake_gcs.gcs_client()
    for bucket in ("planes_bucket_2020_20_10", "another_planes_bucket_2020_10_10"):
        gcs.create_bucket(bucket)
    gcs.bucket("another_planes_bucket_2020_10_10").blob("boeing.jpg").upload_from_string(b"a plane")
    key_file = tmp_path / "secret_planes.json"
    key_file.write_text(json.dumps(service_account_key(token_uri)))

    others = (SEEDS / "supervisely-remote_links.yml").read_text().split("# azure storage example")[1]
    text = (seed_links_yml(moto) + "# azure storage example" + others).replace(
        "endpoint: https://<account name>.blob.core.windows.net", f"endpoint: {azurite.endpoint}").replace(
        "<account name>", AZURITE_ACCOUNT).replace(
        "<secret key 88 chars long or so: aflmg+wg23fWA+6gAafWmgF4a>", AZURITE_KEY).replace(
        "endpoint: storage.googleapis.com", f"endpoint: {fake_gcs.endpoint}").replace(
        "<path to the secret file inside the container>", str(key_file))
    links_yml = tmp_path / "remote_links.yml"
    links_yml.write_text(text)
    env = {k: v for k, v in aws_environment(mounter.run.env, tmp_path).items()
           if not k.startswith(("AZURE_STORAGE_", "GOOGLE_", "STORAGE_EMULATOR"))}
    mounter.run = dataclasses.replace(mounter.run, env=env)
    expected = {"s3/cars_2020_20_10/truck.jpg": b"a truck",
                "azure/boats-bucket-2020-20-10/supersonicboat.jpg": b"a boat",
                "google/another_planes_bucket_2020_10_10/boeing.jpg": b"a plane"}

    def files(root: str) -> dict[str, bytes]:
        out = {}
        for folder, _, names in os.walk(root):
            for name in names:
                with open(os.path.join(folder, name), "rb") as f:
                    out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
        return out

    as_written = mounter.mount(links_yml)
    assert sorted(os.listdir(as_written.path)) == ["google", "s3"]
    assert sorted(os.listdir(as_written.join("google"))) == ["another_planes_bucket_2020_10_10",
                                                             "planes_bucket_2020_20_10"]
    missing = mounter.run.status(as_written)["missing"]
    assert [m.split(" ")[0] for m in missing] == ["azure/boats_bucket_2020_20_10",
                                                  "azure/another_boats_bucket_2020_10_10"]
    assert all("Azure refuses the name (InvalidResourceName" in m for m in missing), missing
    seen = files(as_written.path)
    assert seen["s3/cars_2020_20_10/truck.jpg"] == b"a truck"
    assert seen["google/another_planes_bucket_2020_10_10/boeing.jpg"] == b"a plane"

    valid = tmp_path / "valid" / "remote_links.yml"
    valid.parent.mkdir()
    valid.write_text(text.replace("- boats_bucket_2020_20_10", "- boats-bucket-2020-20-10")
                     .replace("- another_boats_bucket_2020_10_10", "- another-boats-bucket-2020-10-10"))
    assert "- another-boats-bucket-2020-10-10" in valid.read_text()
    every = mounter.mount(valid)
    assert sorted(os.listdir(every.join("azure"))) == ["another-boats-bucket-2020-10-10",
                                                       "boats-bucket-2020-20-10"]
    assert files(every.path)["azure/boats-bucket-2020-20-10/supersonicboat.jpg"] == b"a boat"
    from_toml = mounter.mount(imported(mounter, valid, tmp_path))
    assert files(from_toml.path) == files(every.path), "the imported TOML gives the same tree"
    same_tree(every.path, from_toml.path, list(expected))

    linked = mounter.mount(SEEDS / "supervisely-links.txt", f"config={links_yml}")  # as written
    assert files(linked.path) == {k: v for k, v in expected.items() if not k.startswith("azure/")}
    links = tmp_path / "links.txt"
    links.write_text((SEEDS / "supervisely-links.txt").read_text().replace("boats_bucket_2020_20_10",
                                                                           "boats-bucket-2020-20-10"))
    linked = mounter.mount(links, f"config={valid}")
    assert files(linked.path) == expected
    again = mounter.mount(imported(mounter, links, tmp_path, f"config={valid}"))
    assert files(again.path) == expected, "the imported TOML (links with their settings) gives the same tree"


def imported(mounter: Mounter, path: Path, tmp_path: Path, *options: str) -> Path:
    """What `mountfs config import PATH [-o config=...]` prints, saved as a TOML config."""
    result = mounter.run("config", "import", str(path), *(a for o in options for a in ("-o", o)))
    assert result.returncode == 0, result.stderr
    out = tmp_path / f"imported-{uuid.uuid4().hex[:6]}.toml"
    out.write_text(result.stdout)
    return out


def test_a_bucket_of_the_yml_that_does_not_exist_is_left_out_not_the_mount(mounter: Mounter, moto: S3Server,
                                                                           tmp_path: Path) -> None:
    """The seed's yml names two buckets; one was deleted since. Supervisely serves the other, so does
    the mount: one warning line names the missing bucket with the store's answer, `status` lists it.
    (Legacy names of this test's own: the server is shared with the tests that create the seed's.)"""
    tag = uuid.uuid4().hex[:6]
    here, gone = f"cars_{tag}_20_10", f"cars_{tag}_10_10"
    client = moto.client()
    client.create_bucket(Bucket=here)
    client.put_object(Bucket=here, Key="truck.jpg", Body=b"a truck")
    links_yml = tmp_path / "remote_links.yml"
    text = seed_links_yml(moto).replace("cars_2020_20_10", here).replace("cars_2020_10_10", gone)
    links_yml.write_text(text)
    mounter.run = dataclasses.replace(mounter.run, env=aws_environment(mounter.run.env, tmp_path))
    mnt = mounter.mount(links_yml)
    assert os.listdir(mnt.join("s3")) == [here]
    with open(mnt.join("s3", here, "truck.jpg"), "rb") as f:
        assert f.read() == b"a truck"
    [missing] = mounter.run.status(mnt)["missing"]
    shown = mounter.run("status", mnt.path)
    assert f"  missing {missing}" in shown.stdout.splitlines(), shown.stdout
    assert missing.startswith(f"s3/{gone} left out: bucket {gone} does not exist")
    warnings = [line for line in mnt.log_text().splitlines() if gone in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "Traceback" not in mnt.log_text()
    other = mounter.fresh_dir("mnt")  # the terminal of who mounts it is told too, in one line
    result = mounter.run(str(links_yml), other, "-o", f"cache_dir={tmp_path / 'c1'}")
    mounter.track(other)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"mountfs: warning: {missing}"]
    mounter.umount(other)

    client.delete_object(Bucket=here, Key="truck.jpg")
    client.delete_bucket(Bucket=here)
    result = mounter.run(str(links_yml), mounter.fresh_dir("mnt"), "-o", f"cache_dir={tmp_path / 'c2'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "nothing to mount" in result.stderr and here in result.stderr and gone in result.stderr


def test_a_links_file_mounts_just_its_objects_read_only(mounter: Mounter, moto: S3Server,
                                                        tmp_path: Path) -> None:
    client = moto.client()
    client.create_bucket(Bucket="cars_2020_20_10")
    client.put_object(Bucket="cars_2020_20_10", Key="truck.jpg", Body=b"a truck")
    client.put_object(Bucket="cars_2020_20_10", Key="deep/er/bus.jpg", Body=b"a bus")
    client.put_object(Bucket="cars_2020_20_10", Key="not-linked.jpg", Body=b"hidden")
    client.put_object(Bucket="cars_2020_20_10", Key="deep/also-not.jpg", Body=b"hidden")
    links_yml = tmp_path / "remote_links.yml"
    links_yml.write_text(seed_links_yml(moto))
    links = tmp_path / "links.txt"
    links.write_text("# linked for the cars project\n"
                     "s3://cars_2020_20_10/truck.jpg\n\n"
                     "s3://cars_2020_20_10/deep/er/bus.jpg\n"
                     "s3://cars_2020_20_10/gone.jpg\n")
    mounter.run = dataclasses.replace(mounter.run, env=aws_environment(mounter.run.env, tmp_path))
    mnt = mounter.mount(links, f"config={links_yml}")
    root = mnt.join("s3", "cars_2020_20_10")
    assert os.listdir(mnt.path) == ["s3"]
    assert sorted(os.listdir(root)) == ["deep", "truck.jpg"]  # gone.jpg no longer exists
    assert os.listdir(os.path.join(root, "deep")) == ["er"]
    with open(os.path.join(root, "truck.jpg"), "rb") as f:
        assert f.read() == b"a truck"
    with open(os.path.join(root, "deep", "er", "bus.jpg"), "rb") as f:
        assert f.read() == b"a bus"
    for hidden in ("not-linked.jpg", "deep/also-not.jpg", "gone.jpg"):
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(root, hidden))
    with pytest.raises(OSError) as written, open(os.path.join(root, "new.jpg"), "wb") as f:
        f.write(b"x")
    assert written.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def test_hostile_links_files_give_one_clear_error(mounter: Mounter, mountfs: object, tmp_path: Path) -> None:
    links = tmp_path / "links.txt"
    links.write_text("s3://bucket/ok.jpg\nftp://bucket/x\ns3:///no-bucket\ns3://bucket/../etc/passwd\n")
    config = tmp_path / "settings.env"
    config.write_text("STORAGE_PROVIDER=http\nDATA_PATH=/nonexistent\n")
    result = mounter.run(str(links), mounter.fresh_dir("mnt"), "-o", f"config={config}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "line 2" in result.stderr and 'unknown provider "ftp://"' in result.stderr
    assert "line 3" in result.stderr and "has no bucket" in result.stderr
    assert "line 4" in result.stderr and '".."' in result.stderr


def test_a_links_file_with_the_env_file_for_credentials(mounter: Mounter, seaweedfs: S3Server,
                                                        tmp_path: Path) -> None:
    seaweedfs.create_bucket("sv-links")
    client = seaweedfs.client()
    client.put_object(Bucket="sv-links", Key="persons/p1.jpg", Body=b"person one")
    client.put_object(Bucket="sv-links", Key="persons/p2.jpg", Body=b"not linked")
    env_file = tmp_path / ".env"
    env_file.write_text(seed_env(seaweedfs))
    links = tmp_path / "links.txt"
    links.write_text("s3://sv-links/persons/p1.jpg\n")
    mounter.run = dataclasses.replace(mounter.run, env=aws_environment(mounter.run.env, tmp_path))
    mnt = mounter.mount(links, f"config={env_file}")
    assert os.listdir(mnt.join("s3", "sv-links", "persons")) == ["p1.jpg"]
    with open(mnt.join("s3", "sv-links", "persons", "p1.jpg"), "rb") as f:
        assert f.read() == b"person one"


def test_fs_links_are_read_from_the_folder_of_their_storage_id(mounter: Mounter, tmp_path: Path) -> None:
    """Without -o cache_local: a file:// folder is direct access by default, which a list of links
    must not bypass."""
    folder = tmp_path / "datasets"
    (folder / "persons").mkdir(parents=True)
    (folder / "persons" / "image1.jpg").write_bytes(b"a person")
    (folder / "persons" / "other.jpg").write_bytes(b"not linked")
    links_yml = tmp_path / "remote_links.yml"
    links_yml.write_text(f"my-local-datasets:\n  provider: fs\n  path: {folder}\n  buckets:\n"
                         "  - local-datasets\n")
    links = tmp_path / "links.txt"
    links.write_text("fs://local-datasets/persons/image1.jpg\n")
    mnt = mounter.mount(links, f"config={links_yml}", cache_local=False)
    persons = mnt.join("fs", "local-datasets", "persons")
    assert os.listdir(persons) == ["image1.jpg"]
    with open(os.path.join(persons, "image1.jpg"), "rb") as f:
        assert f.read() == b"a person"
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(persons, "other.jpg"))
