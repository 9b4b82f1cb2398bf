"""What a Supervisely admin and a modelkit developer ran into when trying their own files and
variables as they are: each test is one such file or setting, and what it must give."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mountfs.config.importers import detect, supervisely_env
from mountfs.config.load import load_source
from mountfs.errors import ConfigErrors

REPO = Path(__file__).resolve().parents[2]
MODELKIT_VARIABLES = (
    "MODELKIT_STORAGE_PROVIDER", "MODELKIT_STORAGE_BUCKET", "MODELKIT_STORAGE_PREFIX", "MODELKIT_ASSETS_DIR",
    "S3_ENDPOINT", "AWS_KMS_KEY_ID", "AWS_DEFAULT_REGION", "AZURE_STORAGE_CONNECTION_STRING",
)  # fmt: skip


def mountfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountfs", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def errors_of(source: Path | str, config: str | None = None) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_source(str(source), config)
    return [e.format() for e in info.value.errors]


# --- .env ----------------------------------------------------------------------------------------------

def test_an_empty_value_in_a_env_file_is_not_set(tmp_path: Path) -> None:
    """`KEY=` is how a .env leaves a variable unset; it was an IndexError (a traceback)."""
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=127.0.0.1\nSTORAGE_PORT=9000\n"
                   "STORAGE_ACCESS_KEY=\nSTORAGE_SECRET_KEY=\nSTORAGE_IAM_ROLE=\n")
    values, bad = supervisely_env.parse_env(env.read_text())
    assert values["STORAGE_ACCESS_KEY"][0] == "" and not bad
    result = mountfs("config", "import", str(env))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and 'url = "s3://127.0.0.1:9000/"' in result.stdout


def test_an_unclosed_quote_in_a_env_file_is_an_error_not_part_of_the_secret(tmp_path: Path) -> None:
    """docker compose refuses `KEY="value` (no closing quote); it was read as the secret `"value`."""
    env = tmp_path / ".env"
    env.write_text('STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=127.0.0.1\nSTORAGE_PORT=9000\n'
                   'STORAGE_ACCESS_KEY=key\nSTORAGE_SECRET_KEY="s3cr3t-value\n')
    errors = errors_of(env)
    assert any("STORAGE_SECRET_KEY (line 5)" in e and "quote" in e for e in errors), errors
    assert not any("s3cr3t" in e for e in errors)


def test_bom_crlf_export_and_duplicate_keys_read_as_docker_reads_them(tmp_path: Path) -> None:
    env = tmp_path / "sly.env"
    env.write_bytes(b"\xef\xbb\xbfSTORAGE_PROVIDER=minio\r\nexport STORAGE_ENDPOINT='127.0.0.1'\r\n"
                    b"STORAGE_PORT=9000 # MinIO\r\nSTORAGE_ACCESS_KEY=old\r\nSTORAGE_ACCESS_KEY=\"new\"\r\n"
                    b"STORAGE_SECRET_KEY=secret\r\n")
    config = load_source(str(env))
    assert config.mounts[0].url.raw == "s3://127.0.0.1:9000/"
    assert [c.key for c in config.s3.credentials] == ["new"]


# --- remote_links.yml -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["- provider: minio\n  buckets: [abc]\n", "provider: minio\n"])
def test_a_yml_that_is_not_a_mapping_is_said_so_not_a_toml_error(text: str, tmp_path: Path) -> None:
    """A remote_links.yml written as a list of entries (or a single entry) is the yml's error, not
    "TOML syntax error"."""
    path = tmp_path / "remote_links.yml"
    path.write_text(text)
    errors = errors_of(path)
    assert errors and not any("TOML" in e for e in errors)
    assert "not a YAML mapping of storages" in errors[0]


def test_a_bucket_listed_twice_in_the_yml_is_one_directory(tmp_path: Path) -> None:
    path = tmp_path / "remote_links.yml"
    path.write_text("cars:\n  provider: minio\n  endpoint: 127.0.0.1\n  port: 9000\n  access_key: a\n"
                    "  secret_key: b\n  buckets: [cars_2020_20_10, cars_2020_20_10]\n")
    config = load_source(str(path))
    assert [m.path for m in config.mounts] == ["s3/cars_2020_20_10"]


@pytest.mark.parametrize("name, text", [
    (".env", "STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=http://admin:hunter2@127.0.0.1:9000\n"),
    ("remote_links.yml", "x:\n  provider: minio\n  endpoint: http://admin:hunter2@127.0.0.1:9000\n"
                         "  buckets: [abc]\n"),
])
def test_credentials_in_an_endpoint_url_are_refused_not_dropped(name: str, text: str, tmp_path: Path) -> None:
    """A user:password in STORAGE_ENDPOINT was silently dropped (the mount then had no key)."""
    path = tmp_path / name
    path.write_text(text)
    errors = errors_of(path)
    assert any("credentials" in e and "endpoint" in e.lower() for e in errors), errors
    assert not any("hunter2" in e for e in errors)


@pytest.mark.parametrize("endpoint", ["https://127.0.0.1:abc", "https://[::1", "http://h:70000"])
def test_an_endpoint_url_python_cannot_take_apart_is_an_error_not_a_traceback(endpoint: str,
                                                                             tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT={endpoint}\n")
    yml = tmp_path / "remote_links.yml"
    yml.write_text(f"x:\n  provider: minio\n  endpoint: {endpoint}\n  buckets: [abc]\n")
    for path, key in ((env, "STORAGE_ENDPOINT"), (yml, "x.endpoint")):
        errors = errors_of(path)
        assert any(key in e and "not an endpoint URL" in e for e in errors), errors


# --- links files ----------------------------------------------------------------------------------------

def test_a_bad_bucket_in_a_links_file_names_its_line(tmp_path: Path) -> None:
    """The store's rules are checked after import: the error said "mount[1].url", which a user of a
    links file of 10,000 lines cannot find."""
    path = tmp_path / "links.txt"
    path.write_text("s3://cars_2020_20_10/truck.jpg\n\n# the next is wrong\ns3://ab/x.jpg\n"
                    "s3://ab/y.jpg\n")
    errors = errors_of(path)
    assert errors and all("line 4" in e for e in errors), errors
    assert not any("mount[" in e for e in errors)


def test_config_check_of_a_links_file_takes_its_settings(tmp_path: Path) -> None:
    """fs:// and azure:// links need the .env or remote_links.yml: `config check -o config=` as the
    mount takes it (without it the check could only fail)."""
    data = tmp_path / "datasets"
    data.mkdir()
    yml = tmp_path / "remote_links.yml"
    yml.write_text(f"local:\n  provider: fs\n  path: {data}\n  buckets: [local-datasets]\n")
    links = tmp_path / "links.txt"
    links.write_text("fs://local-datasets/persons/image1.jpg\n")
    result = mountfs("config", "check", str(links), "-o", f"config={yml}")
    assert result.returncode == 0, result.stderr
    assert "ok (1 mount(s))" in result.stdout


# --- modelkit -------------------------------------------------------------------------------------------

def test_an_az_account_name_azure_refuses_names_the_connection_string(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The account comes from AZURE_STORAGE_CONNECTION_STRING; the error blamed MODELKIT_STORAGE_BUCKET."""
    for name in MODELKIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELKIT_STORAGE_PROVIDER", "az")
    monkeypatch.setenv("MODELKIT_STORAGE_BUCKET", "assets")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=x;AccountKey=c2VjcmV0")
    errors = errors_of("modelkit:")
    assert len(errors) == 1 and "AZURE_STORAGE_CONNECTION_STRING" in errors[0], errors
    assert "c2VjcmV0" not in errors[0]


def test_detect_still_takes_each_file_for_what_it_is(tmp_path: Path) -> None:
    """The fixes above keep each file's importer."""
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=minio\nSTORAGE_ACCESS_KEY=\n")
    yml = tmp_path / "remote_links.yml"
    yml.write_text("- provider: minio\n")
    assert getattr(detect(str(env), env.read_text()), "NAME", None) == "supervisely_env"
    assert getattr(detect(str(yml), yml.read_text()), "NAME", None) == "supervisely_yaml"


def test_a_url_source_error_is_not_blamed_on_the_settings_file(tmp_path: Path) -> None:
    """The .env's mount came from STORAGE_ENDPOINT; a URL SOURCE given with -o config= of that .env
    takes its place, and its own error was named "STORAGE_ENDPOINT (line 2)"."""
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=127.0.0.1\nSTORAGE_PORT=9000\n")
    errors = errors_of("s3://ab/prefix", str(env))
    assert errors and not any("STORAGE_ENDPOINT" in e for e in errors), errors


def test_a_links_file_with_settings_names_the_line_of_a_bad_bucket(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("STORAGE_PROVIDER=minio\nSTORAGE_ENDPOINT=127.0.0.1\nSTORAGE_PORT=9000\n")
    links = tmp_path / "links.txt"
    links.write_text("s3://cars_2020_20_10/truck.jpg\ns3://ab/x.jpg\n")
    errors = errors_of(links, str(env))
    assert errors and all(f"line 2 of {links}" in e for e in errors), errors


def test_help_names_every_source_an_outsider_has() -> None:
    """`mountfs --help` said SOURCE is a TOML file or a URL, with the account-first az:// form."""
    text = " ".join(mountfs("--help").stdout.split())
    for source in ("clearml.conf", ".env", "remote_links.yml", "links file", "modelkit:", "-o config=",
                   "az://container@account"):
        assert source in text, source
