"""clearml.conf read as it is: the seeds' own blocks (tests/data/seeds/clearml-*.conf), HOCON's own
features, the mapping of every storage key to mountfs's TOML shape, and `config import`/`config check`."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from mountfs.config import load_source
from mountfs.config.importers import Imported, clearml
from mountfs.config.load import read_document
from mountfs.errors import ConfigErrors

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "tests" / "data" / "seeds"
SEED_ENV = {"AWS_ACCESS_KEY_ID": "AKIAENVEXAMPLE", "AWS_SECRET_ACCESS_KEY": "env-secret",
            "AWS_DEFAULT_REGION": "eu-west-1", "AZURE_STORAGE_ACCOUNT": "devstoreaccount1",
            "AZURE_STORAGE_KEY": "env-key", "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcs/key.json"}


@pytest.fixture
def seed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SEED_ENV.items():
        monkeypatch.setenv(name, value)


def imported(text: str, tmp_path: Path, name: str = "clearml.conf") -> Imported:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return clearml.import_text(str(path), path.read_text())


def seed(name: str) -> Imported:
    path = SEEDS / f"clearml-{name}.conf"
    return clearml.import_text(str(path), path.read_text())


# --- the seeds' blocks ---------------------------------------------------------------------------------

def test_the_s3_block_becomes_s3_its_bucket_entry_and_a_mount_of_that_bucket() -> None:
    result = seed("s3")
    assert result.errors == [] and result.notes == []
    assert result.doc == {
        "s3": {"key": "AKIADEFAULTEXAMPLE", "secret": "default-secret-example",  # region "" left out
               "credentials": [{"bucket": "my-bucket-name", "key": "AKIABUCKETEXAMPLE",
                                "secret": "bucket-secret-example"}],
               "boto3": {"pool_connections": 512, "max_multipart_concurrency": 16}},
        "mount": [{"path": "s3/my-bucket-name", "url": "s3://my-bucket-name"}],
    }
    config = load_source(str(SEEDS / "clearml-s3.conf"))
    assert [(m.path, m.url.bucket) for m in config.mounts] == [("s3/my-bucket-name", "my-bucket-name")]
    assert config.s3.credentials[0].key == "AKIABUCKETEXAMPLE" and config.s3.key == "AKIADEFAULTEXAMPLE"
    assert config.s3.boto3.pool_connections == 512


def test_the_environment_examples_are_substituted_by_hocon(seed_env: None) -> None:
    assert seed("s3-env").doc == {"s3": {"key": "AKIAENVEXAMPLE", "secret": "env-secret",
                                         "region": "eu-west-1"}}
    gcs = seed("gcs-env").doc["gcs"]
    assert gcs == {"credentials": [{"bucket": "my-gcs-bucket", "subdir": "path/in/bucket",
                                    "project": "clearml-test", "credentials_json": "/etc/gcs/key.json"}]}
    containers = seed("azure-env").doc["azure"]["containers"]
    assert containers == [{"account_name": "devstoreaccount1", "account_key": "env-key"}]


def test_the_non_aws_host_entry_keeps_its_options_and_mounts_every_bucket_of_the_host() -> None:
    result = seed("minio")
    assert result.errors == []
    assert result.doc == {
        "s3": {"credentials": [{"host": "my-minio-host:9000", "key": "minio-key", "secret": "minio-secret",
                                "verify": True, "multipart": False, "secure": False}]},
        "mount": [{"path": "s3/my-minio-host:9000", "url": "s3://my-minio-host:9000/"}],
    }
    assert seed("minio-tls").doc["s3"]["credentials"][0]["secure"] is True


@pytest.mark.parametrize("name", ["minio", "minio-tls"])
def test_a_host_entry_loads_as_a_mount_of_the_whole_endpoint(name: str) -> None:
    config = load_source(str(SEEDS / f"clearml-{name}.conf"))
    assert [m.path for m in config.mounts] == ["s3/my-minio-host:9000"]


def test_the_google_block_mounts_the_bucket_subdir_where_clearml_urls_put_it() -> None:
    result = seed("gcs")
    assert result.doc == {
        "gcs": {"project": "clearml", "credentials_json": "/path/to/credentials.json",
                "credentials": [{"bucket": "my-gcs-bucket", "subdir": "path/in/bucket",
                                 "project": "clearml-test",
                                 "credentials_json": "/path/to/credentials.json"}]},
        "mount": [{"path": "gs/my-gcs-bucket/path/in/bucket", "url": "gs://my-gcs-bucket/path/in/bucket"}],
    }
    config = load_source(str(SEEDS / "clearml-gcs.conf"))
    assert config.mounts[0].url.prefix == "path/in/bucket" and config.gcs.project == "clearml"


def test_an_azure_entry_without_container_name_is_kept_for_its_key_and_says_nothing_is_mounted() -> None:
    result = seed("azure")
    assert result.doc["azure"]["containers"][0].keys() == {"account_name", "account_key"}
    assert "mount" not in result.doc
    assert [n.key for n in result.notes] == ["sdk.azure.storage.containers[0]"]
    assert "nothing is mounted" in result.notes[0].message


def test_an_azure_container_is_mounted_at_azure_account_container(tmp_path: Path) -> None:
    result = imported("""
        sdk { azure.storage { containers: [
            { account_name: "acct1", account_key: "k", container_name: "models" } ] } }
    """, tmp_path)
    assert result.doc["mount"] == [{"path": "azure/acct1/models", "url": "az://models@acct1"}]
    config = load_source(str(tmp_path / "clearml.conf"))
    assert (config.mounts[0].url.host, config.mounts[0].url.bucket) == ("acct1", "models")


def test_the_azure_block_loads_without_container_name() -> None:
    config = load_source("az://models@devstoreaccount1/runs", str(SEEDS / "clearml-azure.conf"))
    assert config.azure.containers[0].account_name == "devstoreaccount1"


def test_cache_and_direct_access_as_the_seed_writes_them() -> None:
    result = seed("cache")
    assert result.doc == {"cache": {"dir": "~/.clearml/cache"}, "direct_access": [{"url": "file://*"}]}
    config = load_source("s3://bucket/x", str(SEEDS / "clearml-cache.conf"))
    assert config.cache.dir == os.path.expanduser("~/.clearml/cache")
    assert [d.url for d in config.direct_access or ()] == ["file://*"]


def test_path_substitution_rules() -> None:
    config = load_source("s3://bucket/research", str(SEEDS / "clearml-path-substitution.conf"))
    assert [(p.registered_prefix, p.local_prefix) for p in config.path_substitution] == [
        ("s3://bucket/research", "file:///mnt/shared/bucket/research"),
        ("file:///mnt/shared/folder/", "file:///home/user/shared/folder")]


def test_the_older_fragments_without_sdk_read_the_same() -> None:
    result = seed("older")
    assert result.errors == []
    assert result.doc["s3"]["credentials"][0] == {"bucket": "my-bucket-name", "key": "my-access-key",
                                                  "secret": "my-secret-key"}
    assert result.doc["gcs"]["credentials"][0]["bucket"] == "my-bucket"
    assert result.doc["cache"] == {"dir": "~/.clearml/cache"}
    assert [m["path"] for m in result.doc["mount"]] == [
        "s3/my-bucket-name", "s3/my-minio-host:9000", "gs/my-bucket/path/in/bucket"]
    assert result.origins[("s3", "credentials", 0, "key")] == "aws.s3.credentials[0].key"
    size_note = next(n for n in result.notes if n.key == "storage.cache.default_cache_manager_size")
    assert "max_files" in size_note.message


# --- HOCON as ClearML reads it ---------------------------------------------------------------------------

def test_includes_substitutions_dotted_keys_and_both_separators(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_SECRET", "from-env")
    monkeypatch.delenv("CM_UNSET", raising=False)
    (tmp_path / "creds.conf").write_text('sdk.aws.s3.key = "included-key"\n')
    result = imported("""
        include "creds.conf"
        bucket_name = "data-bucket"
        sdk.aws.s3 {
            secret: ${CM_SECRET}
            token: ${?CM_UNSET}
            credentials = [ { bucket = ${bucket_name}, key: "k", secret: "s" } ]
        }
        sdk.storage.cache.default_base_dir = "/var/cache/cm"
    """, tmp_path)
    assert result.doc["s3"]["key"] == "included-key"
    assert result.doc["s3"]["secret"] == "from-env"
    assert "token" not in result.doc["s3"]
    assert result.doc["mount"] == [{"path": "s3/data-bucket", "url": "s3://data-bucket"}]
    assert [n.key for n in result.notes] == ["bucket_name"]  # outside storage: one note


def test_a_literal_dollar_brace_stays_literal(tmp_path: Path) -> None:
    imported('sdk.aws.s3 { key: "AKIA", secret: "se${cret" }\n', tmp_path)
    config = load_source("s3://bucket", str(tmp_path / "clearml.conf"))
    assert config.s3.secret == "se${cret"


@pytest.mark.parametrize(("text", "line", "message"), [
    ("sdk {\n  aws { s3 { key: \"a\"\n", 3, "HOCON syntax error at column 1: Expected '}'"),
    ("sdk {\n  aws.s3.key: ${CM_NOT_SET_ANYWHERE}\n}\n", 2,
     "${CM_NOT_SET_ANYWHERE}: no such key in the file and no such environment variable"),
    ('sdk.aws.s3.credentials: [\n  { bucket: "b-one", secret: "s3cr3t-value" extra_args: { ACL: "private" }\n'
     '  }\n]\n', 2, "a value runs into the next one"),
])
def test_hocon_errors_are_one_line_with_file_and_line(tmp_path: Path, text: str, line: int,
                                                      message: str) -> None:
    path = tmp_path / "clearml.conf"
    path.write_text(text)
    with pytest.raises(ConfigErrors) as info:
        read_document(str(path))
    (error,) = info.value.errors
    assert (error.file, error.line) == (str(path), line)
    assert message in error.message
    result = subprocess.run([sys.executable, "-m", "mountfs", "config", "check", str(path)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(f"{path}:{line}: ")
    assert "s3cr3t-value" not in result.stderr and "ConfigTree" not in result.stderr


# --- every key: mapped, a note, or an error naming it ---------------------------------------------------

def test_keys_with_no_equivalent_are_notes_and_unknown_keys_errors(tmp_path: Path) -> None:
    result = imported("""
        sdk {
          aws {
            s3 { key: "a", secret: "b", secert: "x",
                 credentials: [ { bucket: "bkt1", acl: "private", subdir: "runs" } ] }
            boto3 { multipart_chunksize: 8388608, multipart_threshold: 8388608, connect_timeout: 60,
                    read_timeout: 60, stream_connections: 128, signature_version: "s3" }
          }
          google.storage { pool_connections: 512, pool_maxsize: 1024 }
          azure.storage { max_connections: 2 }
          storage { dataset_chunk_size_mb: 512, log { level: debug },
                    path_substitution: [ { registered_prefix: "s3://bkt/x", local_prefix: "file:///x",
                                           replace_windows_sep: true } ] }
          development { task_reuse_time_window_in_hours: 72.0 }
        }
        api { web_server: "https://app.clear.ml" }
        agent { git_user: "" }
    """, tmp_path)
    assert result.doc["write"] == {"part_size": 8388608}
    assert result.doc["mount"] == [{"path": "s3/bkt1/runs", "url": "s3://bkt1/runs"}]
    assert result.errors == [
        ("sdk.aws.s3.secert", "unknown key (ClearML does not read it either)", 'did you mean "secret"?'),
        ("sdk.aws.boto3.signature_version", '"s3" is not supported: mountfs signs with SigV4 only',
         'leave it out, or write "s3v4"'),
    ]
    assert sorted(n.key for n in result.notes) == sorted([
        "api, agent, sdk.development", "sdk.aws.s3.credentials[0].acl",
        "sdk.aws.boto3.multipart_threshold", "sdk.aws.boto3.connect_timeout", "sdk.aws.boto3.read_timeout",
        "sdk.aws.boto3.stream_connections", "sdk.google.storage.pool_connections",
        "sdk.google.storage.pool_maxsize", "sdk.azure.storage.max_connections",
        "sdk.storage.path_substitution[0].replace_windows_sep", "sdk.storage.dataset_chunk_size_mb",
        "sdk.storage.log"])
    with pytest.raises(ConfigErrors) as info:
        load_source(str(tmp_path / "clearml.conf"))
    assert [e.key for e in info.value.errors] == ["sdk.aws.s3.secert", "sdk.aws.boto3.signature_version"]


def test_the_readers_errors_name_the_clearml_key(tmp_path: Path) -> None:
    imported("""
        sdk.aws.s3.credentials: [ { host: "minio:9000", bucket: "ok-bucket", key: "k", secret: "s",
                                    secure: "no" } ]
        sdk.aws.boto3.multipart_chunksize: 1024
        sdk.storage.cache.default_base_dir: "relative/cache"
    """, tmp_path)
    with pytest.raises(ConfigErrors) as info:
        load_source(str(tmp_path / "clearml.conf"))
    assert sorted(e.key or "" for e in info.value.errors) == [
        "sdk.aws.boto3.multipart_chunksize", "sdk.aws.s3.credentials[0].secure",
        "sdk.storage.cache.default_base_dir"]


def test_errors_found_when_mounting_name_the_clearml_key_and_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials are read when the store opens, not by `config check`: their errors name the key of
    the clearml.conf the user wrote, and that file even when SOURCE is a URL."""
    from mountfs.config import azure, gcs
    from mountfs.config.urls import parse_url
    from mountfs.errors import ConfigError

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "service_account"')
    imported(f"""
        sdk.google.storage {{
            credentials_json: "/nonexistent/credentials.json"
            credentials = [ {{ bucket: "bucket-one", credentials_json: "{bad}" }} ]
        }}
        sdk.azure.storage.containers: [
            {{ account_name: "acct1", account_key: "k", container_name: "c-one" }} ]
    """, tmp_path)
    conf = str(tmp_path / "clearml.conf")
    config = load_source("gs://other/x", conf)
    with pytest.raises(ConfigError) as default:
        gcs.credentials_info(gcs.resolve(config.mounts[0].url, config))
    assert default.value.format().startswith(f"{conf}: sdk.google.storage.credentials_json: no such")
    config = load_source(conf)
    with pytest.raises(ConfigError) as entry:
        gcs.credentials_info(gcs.resolve(parse_url("gs://bucket-one"), config))
    assert entry.value.format().startswith(
        f"{conf}: sdk.google.storage.credentials[0].credentials_json: credentials file")
    assert azure.resolve(parse_url("az://c-one@acct1"), config).credentials_origin == (
        "sdk.azure.storage.containers[0].account_key")


def test_profile_and_s3_wide_secure_or_verify_are_refused_with_what_to_do(tmp_path: Path) -> None:
    result = imported("""
        sdk.aws.s3 { profile: "team", verify: false, secure: true, credentials: [ { bucket: "bb1",
                     profile: "", key: "k", secret: "s" } ] }
    """, tmp_path)
    assert [(key, hint) for key, _, hint in result.errors] == [
        ("sdk.aws.s3.verify", "put verify: false in the credentials entry of each host it is for"),
        ("sdk.aws.s3.profile", "run mountfs with AWS_PROFILE=team in its environment and leave key and "
                               "secret blank (then boto3's chain reads that profile)")]


def test_new_loader_keys_are_emitted_with_the_agreed_names(tmp_path: Path) -> None:
    """extra_args (default and per bucket), a per-entry use_credentials_chain that differs from the
    default, verify as a CA bundle URL, and direct access by content_type."""
    result = imported("""
        sdk {
          aws.s3 {
            use_credentials_chain: true
            extra_args: { ServerSideEncryption: "aws:kms", SSEKMSKeyId: "key-id" }
            credentials: [
              { bucket: "enc-bucket", key: "k", secret: "s", use_credentials_chain: false,
                extra_args: { StorageClass: "STANDARD_IA", Metadata: { team: "ml" } } },
              { host: "minio:9000", key: "k", secret: "s", use_credentials_chain: true,
                verify: "https://ca.example/bundle.crt" } ] }
          storage.direct_access: [ { url: "file://*" }, { content_type: "text/*" } ]
        }
    """, tmp_path)
    s3 = result.doc["s3"]
    assert s3["use_credentials_chain"] is True
    assert s3["extra_args"] == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-id"}
    first, second = s3["credentials"]
    assert first["use_credentials_chain"] is False
    assert first["extra_args"] == {"StorageClass": "STANDARD_IA", "Metadata": {"team": "ml"}}
    assert "use_credentials_chain" not in second  # the same as the default
    assert second["verify"] == "https://ca.example/bundle.crt"
    assert result.doc["direct_access"] == [{"url": "file://*"}, {"content_type": "text/*"}]
    assert result.origins[("s3", "credentials", 0, "extra_args")] == "sdk.aws.s3.credentials[0].extra_args"


def test_the_loader_takes_the_new_keys(tmp_path: Path) -> None:
    imported("""
        sdk.aws.s3 {
          extra_args: { ServerSideEncryption: "AES256" }
          credentials: [ { bucket: "enc-bucket", key: "k", secret: "s", use_credentials_chain: true,
                           extra_args: { StorageClass: "STANDARD_IA" },
                           verify: "https://ca.example/bundle.crt" } ] }
        sdk.storage.direct_access: [ { content_type: "text/*" } ]
    """, tmp_path)
    config = load_source(str(tmp_path / "clearml.conf"))
    assert [m.path for m in config.mounts] == ["s3/enc-bucket"]


def test_blank_entries_apply_to_nothing_and_nested_mounts_are_merged(tmp_path: Path) -> None:
    result = imported("""
        sdk.aws.s3.credentials: [ { bucket: "", key: "", secret: "" },
                                  { bucket: "same-bucket/", key: "k", secret: "s" },
                                  { bucket: "same-bucket", subdir: "deeper", key: "k2", secret: "s2" } ]
        sdk.google.storage.credentials: [ { bucket: "", subdir: "path/in/bucket" } ]
    """, tmp_path)
    assert [n.key for n in result.notes] == ["sdk.aws.s3.credentials[0]", "sdk.google.storage.credentials[0]"]
    assert result.doc["mount"] == [{"path": "s3/same-bucket", "url": "s3://same-bucket"}]
    assert len(result.doc["s3"]["credentials"]) == 2


def test_storage_sections_outside_sdk_are_refused_when_sdk_is_there(tmp_path: Path) -> None:
    result = imported('sdk { aws.s3.key: "a" }\naws { s3 { key: "b" } }\n', tmp_path)
    assert result.errors == [
        ("aws", "outside sdk { }: ClearML does not read it there", "move it into sdk { }")]


def test_a_file_naming_no_bucket_is_settings_only(tmp_path: Path) -> None:
    imported('sdk.aws.s3 { key: "a", secret: "b" }\n', tmp_path)
    with pytest.raises(ConfigErrors) as info:
        load_source(str(tmp_path / "clearml.conf"))
    assert "names no bucket to mount" in info.value.errors[0].message
    assert "-o config=" in (info.value.errors[0].hint or "")
    assert load_source("s3://bucket/x", str(tmp_path / "clearml.conf")).s3.key == "a"


# --- recognising the format -----------------------------------------------------------------------------

def _toml_texts() -> list[tuple[str, str]]:
    """Every TOML document the tests and the README hold: string constants TOML reads as a table."""
    found = [("pyproject.toml", (ROOT / "pyproject.toml").read_text())]
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "=" in node.value:
                try:
                    if tomllib.loads(node.value):
                        found.append((f"{path.name}:{node.lineno}", node.value))
                except (tomllib.TOMLDecodeError, RecursionError):
                    pass
    readme = (ROOT / "README.md").read_text()
    found += [("README.md", block.split("\n", 1)[1]) for block in readme.split("```toml")[1:]]
    return found


def test_no_mountfs_toml_is_taken_for_a_clearml_conf() -> None:
    texts = _toml_texts()
    assert len(texts) > 50
    claimed = [name for name, text in texts if clearml.looks_like("x.toml", text)
               and "sdk" not in tomllib.loads(text)]
    assert claimed == []


@pytest.mark.parametrize("path", sorted(SEEDS.glob("clearml-*.conf")), ids=lambda p: p.name)
def test_every_seed_file_is_recognised(path: Path) -> None:
    assert clearml.looks_like(str(path), path.read_text())


@pytest.mark.parametrize("text", [
    "[s3]\nkey = 'a'\nsecret = 'b'\n[[mount]]\npath = 'x'\nurl = 's3://bucket'\n",
    "[cache]\ndir = '/var/cache/x'\nstorage {\n",  # a broken TOML file stays TOML (its own errors)
    "sdk = 'a string'\n[[mount]]\npath = 'x'\nurl = 's3://b'\n",
])
def test_toml_and_broken_toml_are_not_claimed(text: str) -> None:
    assert not clearml.looks_like("c.conf", text)


@pytest.mark.parametrize(("name", "text"), [
    ("links.conf", "s3://cars/truck.jpg\ngoogle://planes/boeing.jpg\nazure://boats/boat.jpg\n"),
    ("remote_links.yml", "aws: {provider: s3}\nazure:\n  provider: azure\n"),
    ("storage.env", "STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=minio\n"),
])
def test_other_foreign_formats_are_not_claimed(name: str, text: str) -> None:
    assert not clearml.looks_like(name, text)


def test_a_toml_compatible_clearml_conf_is_claimed() -> None:
    assert clearml.looks_like("clearml.conf", 'sdk.aws.s3.key = "a"\nsdk.aws.s3.secret = "b"\n')


# --- finding the file as ClearML does -------------------------------------------------------------------

def test_default_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigErrors) as info:
        clearml.default_path()
    message = info.value.errors[0].message
    assert "CLEARML_CONFIG_FILE" in message and f"{home}/clearml.conf" in message
    assert f"{home}/trains.conf" in message
    (home / "trains.conf").write_text("sdk {}\n")
    assert clearml.default_path() == f"{home}/trains.conf"
    (home / "clearml.conf").write_text("sdk {}\n")
    assert clearml.default_path() == f"{home}/clearml.conf"
    other = tmp_path / "other.conf"
    other.write_text('sdk.aws.s3 { key: "from-env-file", secret: "s" }\n')
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(other))
    assert clearml.default_path() == str(other)
    assert load_source("s3://bucket/x", "clearml").s3.key == "from-env-file"
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(tmp_path / "missing.conf"))
    with pytest.raises(ConfigErrors, match=r"CLEARML_CONFIG_FILE names .*missing.conf, which is not a file"):
        clearml.default_path()


# --- config import, then config check -------------------------------------------------------------------

def _mountfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountfs", *args], capture_output=True, text=True,
                          env={**os.environ, **SEED_ENV, **(env or {}), "PYTHONPATH": str(ROOT)}, cwd="/")


IMPORTABLE = ["s3", "s3-env", "gcs", "gcs-env", "cache", "path-substitution"]
AFTER_MERGE = ["minio", "minio-tls", "azure", "azure-env", "older"]


@pytest.mark.parametrize("name", [*IMPORTABLE, *AFTER_MERGE])
def test_config_import_prints_toml_that_config_check_accepts(name: str, tmp_path: Path,
                                                            seed_env: None) -> None:
    source = SEEDS / f"clearml-{name}.conf"
    result = _mountfs("config", "import", str(source))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "imported.toml"
    out.write_text(result.stdout)
    assert tomllib.loads(result.stdout) is not None
    check = _mountfs("config", "check", str(out))
    assert check.returncode == 0, check.stderr
    direct = read_document(str(source)).imported
    assert direct is not None
    assert tomllib.loads(result.stdout) == direct.doc


def test_config_import_comments_each_setting_with_no_equivalent(tmp_path: Path) -> None:
    path = tmp_path / "clearml.conf"
    path.write_text('sdk { aws { s3 { key: "a", secret: "b" }, boto3 { connect_timeout: 60 } }\n'
                    '  storage.cache { default_base_dir: "/var/cache/cm",\n'
                    '                  default_cache_manager_size: 100 } }\n'
                    'api { host: "x" }\n')
    result = _mountfs("config", "import", str(path))
    assert result.returncode == 0, result.stderr
    comments = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert "# api: not about storage: ignored" in comments
    assert any(c.startswith("# sdk.aws.boto3.connect_timeout: no equivalent") for c in comments)
    assert any(c.startswith("# sdk.storage.cache.default_cache_manager_size: ") for c in comments)
    out = tmp_path / "imported.toml"
    out.write_text(result.stdout)
    assert _mountfs("config", "check", str(out)).returncode == 0


def test_a_loaded_clearml_conf_carries_its_notes_for_the_daemon_to_log(tmp_path: Path) -> None:
    path = tmp_path / "clearml.conf"
    path.write_text('sdk { aws { s3 { credentials: [ { bucket: "bkt1" } ] }\n'
                    '               boto3 { connect_timeout: 60 } } }\n')
    config = load_source(str(path))
    assert [note.split(":")[0] for note in config.notes] == ["sdk.aws.boto3.connect_timeout"]
