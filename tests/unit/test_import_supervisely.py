"""Supervisely's .env, remote_links.yml and links files: read as they are, imported to TOML that passes
`config check`, expanded at mount time (a whole endpoint's buckets), and a links file's objects only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mountfs.backends.base import ObjectStore
from mountfs.backends.listed import ListedStore
from mountfs.backends.memory import MemoryStore
from mountfs.config import load_config
from mountfs.config.importers import detect, supervisely_env, supervisely_links, supervisely_yaml
from mountfs.config.load import load_source
from mountfs.config.urls import parse_url
from mountfs.config.values import InvalidValue
from mountfs.errors import ConfigErrors, NotFound, ReadOnly
from mountfs.mount import MountSetupError, load_config_with, open_stores, parse_options
from tests.servers import AZURITE_KEY, Emulator, S3Server

SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"
REPO = Path(__file__).resolve().parents[2]
IMPORTERS = (supervisely_env, supervisely_yaml, supervisely_links)


def config_import(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountfs", "config", "import", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def imports_and_checks(path: Path, tmp_path: Path) -> str:
    """`config import` of `path` prints TOML that `config check` accepts; the TOML."""
    result = config_import(path)
    assert result.returncode == 0, result.stderr
    toml = tmp_path / (path.name + ".toml")
    toml.write_text(result.stdout)
    check = subprocess.run([sys.executable, "-m", "mountfs", "config", "check", str(toml)],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert check.returncode == 0, check.stderr
    return result.stdout


def errors_of(path: Path, config: str | None = None) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_source(str(path), config)
    return [e.format() for e in info.value.errors]


# --- .env ----------------------------------------------------------------------------------------------

def test_env_file_syntax_quotes_comments_and_inline_comments() -> None:
    values, bad = supervisely_env.parse_env(
        '# comment\n\nSTORAGE_PROVIDER="minio"\nA=\'x y\'\nB=plain # a comment\nC="q" # c\n'
        'export D=1\nnot a line\n')
    assert {k: v for k, (v, _) in values.items()} == {
        "STORAGE_PROVIDER": "minio", "A": "x y", "B": "plain", "C": "q", "D": "1"}
    assert bad == [(8, "not a line")]


@pytest.mark.parametrize("name", ["supervisely-minio.env", "supervisely-google.env"])
def test_seed_env_files_import_to_a_config_that_checks(name: str, tmp_path: Path) -> None:
    text = imports_and_checks(SEEDS / name, tmp_path)
    assert "# JUPYTER_DOWNLOAD_FILES_BEFORE_START: not about storage; ignored" in text
    assert "# STORAGE_JUPYTER_SYNC: a Supervisely setting mountfs has no use for" in text


def test_seed_minio_env_is_aws_with_its_keys() -> None:
    config = load_config(str(SEEDS / "supervisely-minio.env"))
    (mount,) = config.mounts
    assert (mount.path, mount.url.scheme, mount.url.host, mount.url.bucket) == ("", "s3", None, "")
    assert (config.s3.key, config.s3.secret) == ("<hidden>", "<hidden>")


def test_seed_azure_env_with_its_placeholders_filled(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((SEEDS / "supervisely-azure.env").read_text().replace("<account name>", "myaccount"))
    imports_and_checks(env, tmp_path)
    config = load_config(str(env))
    (mount,) = config.mounts
    assert (mount.url.scheme, mount.url.host, mount.url.bucket) == ("az", "myaccount", "")
    (entry,) = config.azure.containers
    assert (entry.account_name, entry.container_name, entry.endpoint) == ("myaccount", None, None)
    assert entry.account_key == "<secret key 88 chars long or so: aflmg+wg23fWA+6gAafWmgF4a>"


@pytest.mark.parametrize(("lines", "host", "secure"), [
    ("STORAGE_ENDPOINT=minio.local\nSTORAGE_PORT=9000", "minio.local:9000", False),
    ("STORAGE_ENDPOINT=minio.local\nSTORAGE_PORT=443", "minio.local:443", True),
    ("STORAGE_ENDPOINT=https://minio.local:9443", "minio.local:9443", True),
])
def test_minio_endpoint_and_port(lines: str, host: str, secure: bool, tmp_path: Path) -> None:
    env = tmp_path / "supervisely.env"
    env.write_text(f"STORAGE_PROVIDER=minio\n{lines}\nSTORAGE_ACCESS_KEY=k\nSTORAGE_SECRET_KEY=s\n"
                   "CACHE_STORAGE_SIZE=10g\nCACHE_STORAGE_EXPIRES=7d\nCACHE_PREVIEWS_SIZE=1g\n")
    config = load_config(str(env))
    (mount,) = config.mounts
    assert (mount.url.host, mount.url.bucket) == (host, "")
    (entry,) = config.s3.credentials
    assert (entry.host, entry.secure, entry.key, entry.secret) == (host, secure, "k", "s")
    assert config.s3.endpoint == f"{'https' if secure else 'http'}://{host}"
    assert (config.cache.max_size, config.cache.expiry) == (10 << 30, 7 * 86400)
    imported = supervisely_env.import_text(str(env), env.read_text())
    assert [n.key for n in imported.notes] == ["CACHE_PREVIEWS_SIZE"]


def test_iam_role_uses_the_credential_chain(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=s3.amazonaws.com\nSTORAGE_PORT=443\n"
                   "STORAGE_IAM_ROLE=supervisely-role\n")
    config = load_config(str(env))
    assert config.s3.use_credentials_chain and config.s3.key is None
    imported = supervisely_env.import_text(str(env), env.read_text())
    assert any(n.key == "STORAGE_IAM_ROLE" for n in imported.notes)


def test_http_provider_is_the_storage_folder_of_data_path(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=http\n")
    (mount,) = load_config(str(env)).mounts
    assert mount.url.raw == "file:///supervisely/data/storage"
    env.write_text(f"DATA_PATH={tmp_path}/data\n")
    (mount,) = load_config(str(env)).mounts
    assert mount.url.bucket == f"{tmp_path}/data/storage"


def test_env_errors_name_the_variable_and_its_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=dropbox\nCACHE_STORAGE_SIZE=lots\nnonsense\n")
    got = errors_of(env)
    assert any("STORAGE_PROVIDER" in e and '"dropbox" is not a storage provider' in e for e in got), got
    assert any("CACHE_STORAGE_SIZE (line 2)" in e for e in got), got
    assert any("line 3" in e and "is not KEY=VALUE" in e for e in got), got


# --- remote_links.yml ------------------------------------------------------------------------------------

def filled_seed_yml(tmp_path: Path) -> Path:
    text = (SEEDS / "supervisely-remote_links.yml").read_text().replace("<account name>", "seedaccount")
    text = text.replace("<secret key 88 chars long or so: aflmg+wg23fWA+6gAafWmgF4a>", "c2VjcmV0")
    path = tmp_path / "remote_links.yml"
    path.write_text(text)
    return path


def test_seed_remote_links_yml_imports_to_a_config_that_checks(tmp_path: Path) -> None:
    imports_and_checks(filled_seed_yml(tmp_path), tmp_path)
    config = load_config(str(filled_seed_yml(tmp_path)))
    assert [(m.path, m.url.raw) for m in config.mounts] == [
        ("s3/cars_2020_20_10", "s3://cars_2020_20_10"),
        ("s3/cars_2020_10_10", "s3://cars_2020_10_10"),
        ("azure/boats_bucket_2020_20_10", "az://boats_bucket_2020_20_10@seedaccount"),
        ("azure/another_boats_bucket_2020_10_10", "az://another_boats_bucket_2020_10_10@seedaccount"),
        ("google/planes_bucket_2020_20_10", "gs://planes_bucket_2020_20_10"),
        ("google/another_planes_bucket_2020_10_10", "gs://another_planes_bucket_2020_10_10"),
    ]
    assert [(c.bucket, c.region, c.endpoint) for c in config.s3.credentials] == [
        ("cars_2020_20_10", "eu-central-1", None), ("cars_2020_10_10", "eu-central-1", None)]


def test_the_buckets_of_a_yml_or_links_file_are_optional_and_so_is_their_toml(tmp_path: Path) -> None:
    """A bucket of the list that no longer exists is left out when mounting, not the whole mount; the
    imported TOML says so with optional = true, which a TOML config may write too."""
    config = load_config(str(filled_seed_yml(tmp_path)))
    assert config.mounts and all(m.optional for m in config.mounts)
    assert all(m.optional for m in load_source(str(SEEDS / "supervisely-links.txt"),
                                               str(filled_seed_yml(tmp_path))).mounts)
    assert "optional = true" in imports_and_checks(filled_seed_yml(tmp_path), tmp_path)
    toml = tmp_path / "m.toml"
    toml.write_text('[[mount]]\npath = "a"\nurl = "s3://bucket-a"\n[[mount]]\npath = "b"\n'
                    'url = "s3://bucket-b"\noptional = true\n')
    assert [m.optional for m in load_config(str(toml)).mounts] == [False, True]
    toml.write_text('[[mount]]\npath = "a"\nurl = "s3://bucket-a"\noptional = "yes"\n')
    assert errors_of(toml) == [
        f'{toml}:4: mount[0].optional: expected a boolean (true or false), got string "yes"']


def test_errors_found_when_mounting_name_the_yml_key_the_user_wrote(tmp_path: Path) -> None:
    """The credentials file is read when the store opens: its error names credentials_path of the
    entry, and an Azure key's origin its secret_key, not mountfs's own keys."""
    from mountfs.config import azure, gcs
    from mountfs.errors import ConfigError

    yml = tmp_path / "remote_links.yml"
    yml.write_text("planes:\n  provider: google\n  credentials_path: /nonexistent/k.json\n  buckets:\n"
                   "  - planes-b\nboats:\n  provider: azure\n  access_key: acct1\n  secret_key: c2VjcmV0\n"
                   "  buckets: [boats-b]\n")
    config = load_config(str(yml))
    with pytest.raises(ConfigError) as info:
        gcs.credentials_info(gcs.resolve(parse_url("gs://planes-b"), config))
    assert info.value.format().startswith(f"{yml}: planes.credentials_path: no such credentials file")
    assert azure.resolve(parse_url("az://boats-b@acct1"), config).credentials_origin == "boats.secret_key"


def test_the_seed_yml_as_written_is_a_yaml_error_with_its_line(tmp_path: Path) -> None:
    """Its Azure secret placeholder holds ": ", which YAML takes for a mapping."""
    path = tmp_path / "remote_links.yml"
    path.write_text((SEEDS / "supervisely-remote_links.yml").read_text())
    error = errors_of(path)[0]
    assert "YAML syntax error at line 19" in error and "needs quotes" in error


def test_fs_provider_maps_storage_ids_to_folders(tmp_path: Path) -> None:
    path = tmp_path / "remote_links.yml"
    path.write_text("my-local:\n  provider: fs\n  path: /data/datasets\n  buckets:\n  - local-datasets\n"
                    "other:\n  provider: fs\n  path: /srv/other/\n")
    config = load_config(str(path))
    assert [(p.registered_prefix, p.local_prefix) for p in config.path_substitution] == [
        ("fs://local-datasets", "file:///data/datasets"), ("fs://other", "file:///srv/other")]
    assert [(m.path, m.url.raw) for m in config.mounts] == [
        ("fs/local-datasets", "fs://local-datasets"), ("fs/other", "fs://other")]
    imports_and_checks(path, tmp_path)


def test_yml_errors_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "remote_links.yml"
    path.write_text("a:\n  provider: dropbox\n  buckets: [x]\nb:\n  provider: minio\n  buckets: bucket\n"
                    "c:\n  provider: fs\n  buckets: [id]\n")
    got = errors_of(path)
    assert any("a.provider" in e and '"dropbox" is not a provider' in e for e in got), got
    assert any("b.buckets" in e and "expected a list of bucket names" in e for e in got), got
    assert any("c.path" in e and "needs path" in e for e in got), got


# --- links files -----------------------------------------------------------------------------------------

def test_seed_links_file_with_the_yml_for_credentials(tmp_path: Path) -> None:
    config = load_source(str(SEEDS / "supervisely-links.txt"), str(filled_seed_yml(tmp_path)))
    assert [(m.path, m.url.raw, m.objects, m.read_only) for m in config.mounts] == [
        ("s3/cars_2020_20_10", "s3://cars_2020_20_10", ("truck.jpg",), True),
        ("azure/boats_bucket_2020_20_10", "az://boats_bucket_2020_20_10@seedaccount",
         ("supersonicboat.jpg",), True),
        ("google/another_planes_bucket_2020_10_10", "gs://another_planes_bucket_2020_10_10",
         ("boeing.jpg",), True),
    ]
    assert config.s3.credentials[0].bucket == "cars_2020_20_10"


def test_an_azure_link_without_settings_says_what_is_missing() -> None:
    (error,) = errors_of(SEEDS / "supervisely-links.txt")
    assert "azure://boats_bucket_2020_20_10: a links file does not say the storage account" in error
    result = config_import(SEEDS / "supervisely-links.txt")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "a links file does not say the storage account" in result.stderr


def test_a_links_file_of_s3_google_and_fs_links_imports_to_a_config_that_checks(tmp_path: Path) -> None:
    links = tmp_path / "links.txt"
    links.write_text("s3://cars_2020_20_10/truck.jpg\ngoogle://planes/boeing.jpg\n"
                     "s3://cars_2020_20_10/truck.jpg\n")
    text = imports_and_checks(links, tmp_path)
    assert 'objects = ["truck.jpg"]' in text
    links.write_text("fs://local-datasets/persons/image1.jpg\n")  # alone, nothing maps the storage id
    done = subprocess.run([sys.executable, "-m", "mountfs", "config", "import", str(links)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and 'storage id "local-datasets"' in done.stderr


def test_config_import_of_a_links_file_takes_its_settings_by_o_config(tmp_path: Path) -> None:
    """The seed's links file (an azure:// link) and an fs:// link need the settings; with them, `config
    import` prints one TOML of the settings and just the linked objects, which loads to the same mounts
    as `mountfs LINKS MNT -o config=` would mount."""
    yml = filled_seed_yml(tmp_path)
    folder = tmp_path / "datasets"
    folder.mkdir()
    yml.write_text(yml.read_text() + f"\nmy-local:\n  provider: fs\n  path: {folder}\n  buckets:\n"
                   "  - local-datasets\n")
    links = tmp_path / "links.txt"
    links.write_text((SEEDS / "supervisely-links.txt").read_text() + "fs://local-datasets/persons/1.jpg\n")
    for bare in (links, SEEDS / "supervisely-links.txt"):
        result = config_import(bare)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "name the settings with -o config=" in result.stderr
    result = subprocess.run([sys.executable, "-m", "mountfs", "config", "import", str(links), "-o",
                             f"config={yml}"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "c2VjcmV0" in result.stdout  # the settings' key: the printed TOML is the whole config
    toml = tmp_path / "imported.toml"
    toml.write_text(result.stdout)
    shape = [(m.path, m.url.raw, m.objects, m.read_only) for m in load_source(str(links), str(yml)).mounts]
    assert [(m.path, m.url.raw, m.objects, m.read_only) for m in load_config(str(toml)).mounts] == shape
    assert ("fs/local-datasets", "fs://local-datasets", ("persons/1.jpg",), True) in shape
    assert len(shape) == 4, "the yml's own buckets are not mounted, only the linked objects"

    other = tmp_path / "other.yml"
    other.write_text("cars:\n  provider: minio\n  endpoint: s3.amazonaws.com\n  buckets: [cars_2020_20_10]\n")
    result = subprocess.run([sys.executable, "-m", "mountfs", "config", "import", str(links), "-o",
                             f"config={other}"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "azure://boats_bucket_2020_20_10: the settings do not say its storage account" in result.stderr
    assert "fs://local-datasets: the settings map it to no folder" in result.stderr


@pytest.mark.parametrize(("options", "code", "says"), [
    (["-o", "config="], 2, "config import takes one -o config=FILE, not config="),
    (["-o", "config=a,config=b"], 2, "config import takes one -o config=FILE"),
    (["-o", "cache_dir=/tmp"], 2, "config import takes one -o config=FILE, not cache_dir=/tmp"),
    (["-o", "config=/dev/zero"], 1, "/dev/zero: is not a regular file"),
    (["-o", "config=/nonexistent/remote_links.yml"], 1, "/nonexistent/remote_links.yml: no such file"),
])
def test_config_import_with_a_bad_o_config_is_one_line(tmp_path: Path, options: list[str], code: int,
                                                       says: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mountfs", "config", "import",
                             str(SEEDS / "supervisely-links.txt"), *options],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == code and "Traceback" not in result.stderr
    assert says in result.stderr.splitlines()[-1], result.stderr


def test_fs_links_are_served_from_the_folder_of_their_storage_id(tmp_path: Path) -> None:
    folder = tmp_path / "datasets"
    (folder / "persons").mkdir(parents=True)
    (folder / "persons" / "image1.jpg").write_bytes(b"a person")
    (folder / "persons" / "other.jpg").write_bytes(b"not linked")
    yml = tmp_path / "remote_links.yml"
    yml.write_text(f"local:\n  provider: fs\n  path: {folder}\n  buckets:\n  - local-datasets\n")
    links = tmp_path / "links.txt"
    links.write_text("fs://local-datasets/persons/image1.jpg\n")
    options = parse_options([f"config={yml}", f"cache_dir={tmp_path / 'cache'}"])
    config = load_config_with(str(links), options)
    (mount,) = config.mounts
    assert (mount.path, mount.url.bucket, mount.substituted_for) == (
        "fs/local-datasets", str(folder), "fs://local-datasets")
    (store,) = open_stores(config)
    page = store.list("persons/", "/")
    assert [o.key for o in page.objects] == ["persons/image1.jpg"]
    assert store.get_range("persons/image1.jpg", 0, 100) == b"a person"


def test_hostile_links_files(tmp_path: Path) -> None:
    links = tmp_path / "links.txt"
    links.write_text("s3://ok-bucket/a.jpg\nhttp://x/y\ns3://\ns3:///key\ns3://ok-bucket/\n"
                     "s3://ok-bucket/../../etc/passwd\ns3://ok-bucket/a//b\ns3://user:pw@host/k\n"
                     "not a link\n")
    got = errors_of(links, None)
    assert "Traceback" not in "\n".join(got)
    for line, words in [(2, '"http://x/y" is a public web link'), (3, "has no bucket"), (4, "has no bucket"),
                        (5, "names a bucket, not an object"), (6, '".."'), (7, "empty segment"),
                        (8, "is not a bucket name"), (9, "is not a link")]:
        assert any(f"line {line}:" in e and words in e for e in got), (line, got)


def test_the_seeds_public_https_link_is_refused_saying_what_a_links_file_mounts(tmp_path: Path) -> None:
    """The seed: a public link (https://s3-us-west-2.amazonaws.com/test1/abc) needs no settings, as
    Supervisely opens it itself; it is no bucket to mount. One line says so and what to write."""
    links = tmp_path / "links.txt"
    links.write_text("s3://cars_2020_20_10/truck.jpg\nhttps://s3-us-west-2.amazonaws.com/test1/abc\n")
    result = config_import(links)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "line 2:" in line and "is a public web link, not a storage link" in line
    assert "s3://BUCKET/KEY" in line


def test_ten_thousand_links(tmp_path: Path) -> None:
    links = tmp_path / "links.txt"
    links.write_text("".join(f"s3://big-bucket/d{i % 100}/f{i}.jpg\n" for i in range(10_000)))
    (mount,) = load_source(str(links)).mounts
    assert mount.objects is not None and len(mount.objects) == 10_000
    bad = tmp_path / "bad.txt"
    bad.write_text("s3://bucket/ok\n" + "ftp://x/y\n" * 10_000)
    got = errors_of(bad)
    assert len(got) == supervisely_links.MAX_ERRORS + 1, len(got)


# --- recognising the formats -----------------------------------------------------------------------------

def test_no_importer_takes_a_mountfs_toml_file(tmp_path: Path) -> None:
    tomls = [
        '[[mount]]\npath = "a"\nurl = "s3://bucket"\n',
        'STORAGE_PROVIDER="minio"\n',  # a TOML file with one top-level key is still TOML when named .toml
        '[s3]\nkey = "provider"\n[[mount]]\npath=""\nurl="s3://b"\n',
    ]
    for text in tomls:
        for module in IMPORTERS:
            assert not module.looks_like("/etc/mountfs/config.toml", text) or module is supervisely_env
    assert detect("/etc/mountfs/config.toml", tomls[0]) is None
    assert detect("/etc/mountfs/config.toml", tomls[2]) is None
    assert detect("x/.env", "STORAGE_PROVIDER=minio\n") is supervisely_env
    assert detect("x/remote_links.yml", "a:\n  provider: minio\n  buckets: [b]\n") is supervisely_yaml
    assert detect("links.txt", "# links\ns3://b/k\n") is supervisely_links


# --- URLs ------------------------------------------------------------------------------------------------

def test_bucketless_urls_only_where_a_mount_takes_them() -> None:
    assert parse_url("s3://127.0.0.1:9000/", bucketless=True).bucket == ""
    assert parse_url("az://@acct/", bucketless=True).host == "acct"
    with pytest.raises(InvalidValue):
        parse_url("gs://")  # a whole GCS project: only where a mount takes it
    assert parse_url("s3://cars_2020_20_10/truck.jpg").bucket == "cars_2020_20_10"


# --- the listed-objects store ----------------------------------------------------------------------------

def test_listed_store_shows_only_its_objects_and_their_folders() -> None:
    inner = MemoryStore()
    for key in ("a.jpg", "x/y/b.jpg", "x/hidden.jpg", "hidden.jpg", "x/y/z/c.jpg"):
        inner.put(key, key.encode())
    store: ObjectStore = ListedStore(inner, ["a.jpg", "x/y/b.jpg", "x/y/z/c.jpg", "gone.jpg"])
    root = store.list("", "/")
    assert ([o.key for o in root.objects], root.prefixes) == (["a.jpg"], ["x/"])
    assert store.list("x/", "/").prefixes == ["x/y/"] and store.list("x/", "/").objects == []
    inside = store.list("x/y/", "/")
    assert ([o.key for o in inside.objects], inside.prefixes) == (["x/y/b.jpg"], ["x/y/z/"])
    assert [o.key for o in store.list("", None).objects] == ["a.jpg", "x/y/b.jpg", "x/y/z/c.jpg"]
    assert store.get_range("x/y/b.jpg", 0, 100) == b"x/y/b.jpg"
    assert store.object_id(store.head("a.jpg")) == inner.object_id(inner.head("a.jpg"))
    for key in ("hidden.jpg", "x/hidden.jpg"):
        with pytest.raises(NotFound):
            store.head(key)
        with pytest.raises(NotFound):
            store.get_range(key, 0, 1)
    with pytest.raises(NotFound):
        store.head("gone.jpg")  # listed, but no longer there: the store's answer
    with pytest.raises(ReadOnly):
        store.put("a.jpg", b"x")
    paged = store.list("x/y/z/", "/", None, 1)
    assert [o.key for o in paged.objects] == ["x/y/z/c.jpg"] and paged.next_token is None


def test_objects_key_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[mount]]\npath = "a"\nurl = "s3://bucket"\nobjects = ["ok", "../x", "", 3]\n'
                      '[[mount]]\npath = "b"\nurl = "s3://127.0.0.1:9000/"\nobjects = ["k"]\n')
    with pytest.raises(ConfigErrors) as info:
        load_config(str(config))
    got = [e.format() for e in info.value.errors]
    assert any("objects" in e and "expected an array of object keys" in e for e in got), got
    config.write_text('[[mount]]\npath = "a"\nurl = "s3://bucket"\nobjects = ["ok", "../x", ""]\n'
                      '[[mount]]\npath = "b"\nurl = "s3://127.0.0.1:9000/"\nobjects = ["k"]\n')
    with pytest.raises(ConfigErrors) as info:
        load_config(str(config))
    got = [e.format() for e in info.value.errors]
    assert any("objects[1]" in e and '".."' in e for e in got), got
    assert any("objects[2]" in e and "an empty key" in e for e in got), got
    assert any("mount[1].objects" in e and "needs a URL that names a bucket" in e for e in got), got
    config.write_text('[[mount]]\npath = "a"\nurl = "s3://bucket"\nobjects = ["k", "k"]\n')
    (mount,) = load_config(str(config)).mounts
    assert (mount.objects, mount.read_only) == (("k",), True)


# --- a whole endpoint, expanded at mount time ------------------------------------------------------------

def test_a_whole_s3_endpoint_is_one_mount_per_bucket(seaweedfs: S3Server, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    seaweedfs.create_bucket("whole-a")
    seaweedfs.create_bucket("whole-b")
    seaweedfs.client().put_object(Bucket="whole-b", Key="k.txt", Body=b"in b")
    host, port = seaweedfs.host_port.rsplit(":", 1)
    env = tmp_path / ".env"
    env.write_text(f"STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT={host}\nSTORAGE_PORT={port}\n"
                   f"STORAGE_ACCESS_KEY={seaweedfs.access_key}\nSTORAGE_SECRET_KEY={seaweedfs.secret_key}\n")
    config = load_config_with(str(env), parse_options([f"cache_dir={tmp_path / 'c'}"]))
    paths = {m.path: m.url.raw for m in config.mounts}
    assert paths["whole-b"] == f"s3://{seaweedfs.host_port}/whole-b" and "whole-a" in paths
    stores = open_stores(config)
    store = stores[[m.path for m in config.mounts].index("whole-b")]
    assert store.get_range("k.txt", 0, 10) == b"in b"
    env.write_text(env.read_text().replace(seaweedfs.secret_key, "wrong-secret"))
    with pytest.raises(MountSetupError) as info:
        load_config_with(str(env), parse_options([]))
    message = str(info.value)
    assert f"cannot list the buckets of s3://{seaweedfs.host_port}/" in message
    assert "name the buckets instead" in message and "access denied" in message


def test_a_whole_azure_account_is_one_mount_per_container(azurite: Emulator, tmp_path: Path) -> None:
    azurite.create_bucket("envcontainer")
    azurite.azure_client().get_container_client("envcontainer").upload_blob("f.txt", b"azure file")
    env = tmp_path / ".env"
    env.write_text(f"STORAGE_PROVIDER=azure\nSTORAGE_ACCESS_KEY=devstoreaccount1\n"
                   f"STORAGE_SECRET_KEY={AZURITE_KEY}\nSTORAGE_ENDPOINT={azurite.endpoint}\n")
    config = load_config_with(str(env), parse_options([]))
    paths = [m.path for m in config.mounts]
    assert "envcontainer" in paths
    store = open_stores(config)[paths.index("envcontainer")]
    assert store.get_range("f.txt", 0, 100) == b"azure file"


def test_a_whole_gcs_project_is_one_mount_per_bucket(fake_gcs: Emulator, tmp_path: Path) -> None:
    fake_gcs.create_bucket("env-bucket")
    fake_gcs.gcs_client().bucket("env-bucket").blob("g.txt").upload_from_string(b"gcs file")
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'[gcs]\nendpoint = "{fake_gcs.endpoint}"\nproject = "test"\n'
                           '[[mount]]\npath = ""\nurl = "gs://"\n')
    config = load_config_with(str(config_file), parse_options([]))
    paths = [m.path for m in config.mounts]
    assert "env-bucket" in paths
    store = open_stores(config)[paths.index("env-bucket")]
    assert store.get_range("g.txt", 0, 100) == b"gcs file"


def test_listed_objects_inside_a_substituted_folder_are_served_from_it(tmp_path: Path) -> None:
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "b.jpg").write_bytes(b"from the mirror")
    (folder / "c.jpg").write_bytes(b"not listed")
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'[[mount]]\npath = "m"\nurl = "s3://bucket"\nobjects = ["a.jpg", "sub/b.jpg"]\n'
                           f'[[path_substitution]]\nregistered_prefix = "s3://bucket/sub"\n'
                           f'local_prefix = "file://{folder}"\n')
    config = load_config_with(str(config_file), parse_options([]))
    assert [(m.path, m.objects) for m in config.mounts] == [("m", ("a.jpg", "sub/b.jpg")),
                                                            ("m/sub", ("b.jpg",))]


def test_aws_buckets_of_a_whole_endpoint_get_their_own_region(moto: S3Server, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each AWS bucket (here on moto, named only by AWS_ENDPOINT_URL) is reached in its own region:
    ListBuckets says it, or the bucket does (GetBucketLocation) when the answer does not, as moto's."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = moto.client()
    client.create_bucket(Bucket="eu-bucket-sv",
                         CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=s3.amazonaws.com\nSTORAGE_PORT=443\n"
                   "STORAGE_ACCESS_KEY=k\nSTORAGE_SECRET_KEY=s\n")
    config = load_config_with(str(env), parse_options([]))
    assert "eu-bucket-sv" in [m.path for m in config.mounts]
    assert [(c.bucket, c.region) for c in config.s3.credentials if c.bucket == "eu-bucket-sv"] == [
        ("eu-bucket-sv", "eu-central-1")]


def test_hostile_yml_files(tmp_path: Path) -> None:
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        bomb.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]")
    path = tmp_path / "remote_links.yml"
    path.write_text("\n".join(bomb) + "\nx:\n  provider: minio\n  buckets: *i\n")
    got = errors_of(path)
    assert any("x.buckets: expected a list of bucket names" in e for e in got), got
    path.write_text("x:\n  provider: minio\n  buckets: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "YAML nested too deeply to read" in errors_of(path)[0]


def test_a_whole_endpoint_on_the_command_line_as_in_a_config() -> None:
    (mount,) = load_source("s3://127.0.0.1:9000/").mounts
    assert (mount.path, mount.url.host, mount.url.bucket) == ("", "127.0.0.1:9000", "")


SEED_OVERRIDE = """\
services:
  http-storage:
    volumes:
    - {key}:/gcs.json:ro
    - {key}:/secret_planes.json:ro
    - data:/data
  proxy:
    environment:
      CACHE_PREVIEWS_SIZE: 1g
      CACHE_PREVIEWS_EXPIRES: 12h
      CACHE_STORAGE_SIZE: 10g
      CACHE_STORAGE_EXPIRES: 7d
      CACHE_IMAGE_CONVERTER_SIZE: 10g
      CACHE_IMAGE_CONVERTER_EXPIRES: 7d
"""


def test_the_compose_override_beside_the_env_gives_the_key_file_and_cache_sizes(tmp_path: Path) -> None:
    """The seed's docker-compose.override.yml (the key file mounted at /gcs.json in the http-storage
    container, the proxy's cache sizes) is read beside the .env: STORAGE_CREDENTIALS_PATH=/gcs.json is
    the container's path, the key is read from the host file mounted there; the proxy's sizes win."""
    key = tmp_path / "keys" / "gcs.json"
    env = tmp_path / ".env"
    env.write_text((SEEDS / "supervisely-google.env").read_text() + "CACHE_STORAGE_SIZE=20g\n")
    config = load_config(str(env))
    assert config.gcs.credentials_json == "/gcs.json" and config.cache.max_size == 20 << 30
    (tmp_path / "docker-compose.override.yml").write_text(SEED_OVERRIDE.format(key="./keys/gcs.json"))
    config = load_config(str(env))
    assert config.gcs.credentials_json == str(key)
    assert (config.cache.max_size, config.cache.expiry) == (10 << 30, 7 * 86400)
    assert any(n.startswith("STORAGE_CREDENTIALS_PATH: /gcs.json is the http-storage container's path")
               for n in config.notes)
    assert any(n.startswith("CACHE_PREVIEWS_SIZE:") for n in config.notes)
    assert f'credentials_json = "{key}"' in imports_and_checks(env, tmp_path)


def test_the_compose_override_beside_the_yml_gives_its_key_file(tmp_path: Path) -> None:
    """The seed's credentials_path is a path inside the container ("<path to the secret file inside the
    container>"): the override the seed shows mounts the host's key file at /secret_planes.json."""
    yml = filled_seed_yml(tmp_path)
    yml.write_text(yml.read_text().replace("<path to the secret file inside the container>",
                                           "/secret_planes.json"))
    config = load_config(str(yml))
    assert {c.credentials_json for c in config.gcs.credentials} == {"/secret_planes.json"}
    (tmp_path / "docker-compose.override.yml").write_text(SEED_OVERRIDE.format(key="~/planes.json"))
    config = load_config(str(yml))
    home = str(Path("~/planes.json").expanduser())
    assert {c.credentials_json for c in config.gcs.credentials} == {home}
    assert any(n.startswith("my-planes-datasets.credentials_path: /secret_planes.json is the http-storage")
               for n in config.notes)
