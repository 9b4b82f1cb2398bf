"""The GCS adapter's own logic: where endpoint, credentials and project come from, how keys are read,
and how SDK errors map onto mountfs's. Everything else about GCS is tested against fake-gcs-server
in tests/integration/test_gcs_contract.py."""

from __future__ import annotations

import json
from pathlib import Path

import google.auth.exceptions
import pytest
import requests
from google.api_core import exceptions as api_exceptions

from mountfs.backends.gcs import GcsStore, _decode_token, _encode_token, translate
from mountfs.config import Config, RetryConfig, load_config, parse_url
from mountfs.config.gcs import GcsSettings, credentials_info, load_credentials, resolve
from mountfs.errors import (
    AccessDenied,
    ConfigError,
    NoCredentials,
    NotFound,
    Rejected,
    Stale,
    StoreUnavailable,
    Throttled,
    Transient,
)

CONFIG = """
[gcs]
project = "default-project"
credentials_json = "/etc/mountfs/default.json"

[[gcs.credentials]]
bucket = "team"
credentials_json = "/etc/mountfs/team.json"

[[gcs.credentials]]
bucket = "team"
subdir = "runs"
credentials_json = "/etc/mountfs/runs.json"
project = "runs-project"

[[gcs.credentials]]
bucket = "team"
subdir = "runs/secret"
credentials_json = "/etc/mountfs/secret.json"

[[mount]]
path = "x"
url = "gs://team/x"
"""

AUTHORIZED_USER = {"type": "authorized_user", "client_id": "id.apps.googleusercontent.com",
                   "client_secret": "CLIENT-SECRET-SENTINEL", "refresh_token": "REFRESH-SENTINEL",
                   "quota_project_id": "quota-project"}


def load(tmp_path: Path, text: str = CONFIG) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(str(path))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)


def test_credentials_most_specific_first(tmp_path: Path) -> None:
    config = load(tmp_path)
    cases = {
        "gs://team/data": ("/etc/mountfs/team.json", "gcs.credentials[0].credentials_json",
                           "default-project"),
        "gs://team": ("/etc/mountfs/team.json", "gcs.credentials[0].credentials_json", "default-project"),
        "gs://team/runs": ("/etc/mountfs/runs.json", "gcs.credentials[1].credentials_json", "runs-project"),
        "gs://team/runs/exp1": ("/etc/mountfs/runs.json", "gcs.credentials[1].credentials_json",
                                "runs-project"),
        "gs://team/runsx": ("/etc/mountfs/team.json", "gcs.credentials[0].credentials_json",
                            "default-project"),
        "gs://team/runs/secret/a": ("/etc/mountfs/secret.json", "gcs.credentials[2].credentials_json",
                                    "default-project"),
        "gs://other/p": ("/etc/mountfs/default.json", "gcs.credentials_json", "default-project"),
    }
    for url, (path, origin, project) in cases.items():
        settings = resolve(parse_url(url), config)
        assert (settings.credentials_json, settings.credentials_origin, settings.project) == (
            path, origin, project), url
        assert settings.endpoint is None and not settings.anonymous


def test_environment_then_emulator_then_default_credentials(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bare = load(tmp_path, '[[mount]]\npath = "x"\nurl = "gs://bkt"\n')
    url = parse_url("gs://bkt/p")
    plain = resolve(url, bare)
    assert (plain.credentials_json, plain.credentials_origin, plain.anonymous, plain.endpoint) == (
        None, "application default credentials", False, None)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:4443")
    emulated = resolve(url, bare)
    assert (emulated.endpoint, emulated.anonymous) == ("http://localhost:4443", True)
    assert emulated.describe() == "gs://bkt at http://localhost:4443"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/keys/k.json")
    keyed = resolve(url, bare)
    assert (keyed.credentials_json, keyed.credentials_origin, keyed.anonymous) == (
        "/keys/k.json", "GOOGLE_APPLICATION_CREDENTIALS", False)
    configured = resolve(url, load(tmp_path, CONFIG))
    assert configured.credentials_json == "/etc/mountfs/default.json", "the config wins over the environment"


def test_endpoint_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://elsewhere:1")
    emulator = load(tmp_path, '[gcs]\nendpoint = "http://127.0.0.1:4443/"\n[[mount]]\npath = "x"\nurl = "gs://bkt"\n')
    settings = resolve(parse_url("gs://bkt"), emulator)
    assert (settings.endpoint, settings.anonymous) == ("http://127.0.0.1:4443", True)
    private = load(tmp_path, '[gcs]\nendpoint = "https://storage-psc.p.googleapis.com"\n'
                             '[[mount]]\npath = "x"\nurl = "gs://bkt"\n')
    settings = resolve(parse_url("gs://bkt"), private)
    assert (settings.endpoint, settings.anonymous) == ("https://storage-psc.p.googleapis.com", False), (
        "bearer tokens go over https only: an https endpoint keeps the default credentials")


def test_a_relative_key_path_is_made_absolute_at_mount_time(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon moves to / after it forks, and reads the key again there."""
    monkeypatch.chdir(tmp_path)
    config = load(tmp_path, '[gcs]\ncredentials_json = "keys/k.json"\n[[mount]]\npath = "x"\nurl = "gs://bkt"\n')
    assert resolve(parse_url("gs://bkt"), config).credentials_json == str(tmp_path / "keys" / "k.json")


def test_no_secret_in_settings_repr(tmp_path: Path) -> None:
    settings = GcsSettings(bucket="b", endpoint=None, credentials_json=json.dumps(AUTHORIZED_USER))
    assert "SENTINEL" not in repr(settings)
    assert "SENTINEL" not in settings.describe()


def test_credentials_json_is_a_file_first_then_json_text(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text(json.dumps(AUTHORIZED_USER))
    from_file = GcsSettings(bucket="b", endpoint=None, credentials_json=str(key))
    assert credentials_info(from_file) == AUTHORIZED_USER
    from_text = GcsSettings(bucket="b", endpoint=None, credentials_json=json.dumps(AUTHORIZED_USER))
    assert credentials_info(from_text) == AUTHORIZED_USER
    for settings in (from_file, from_text):
        credentials, project = load_credentials(settings)
        assert type(credentials).__name__ == "Credentials"
        assert credentials.quota_project_id == "quota-project"
        assert project is None  # an authorized_user key names no project of its own


def test_unusable_credentials_json_names_the_key_never_the_content(tmp_path: Path) -> None:
    def error(value: str) -> str:
        settings = GcsSettings(bucket="b", endpoint=None, credentials_json=value, config_source="c.toml",
                               credentials_origin="gcs.credentials[0].credentials_json")
        with pytest.raises(ConfigError) as info:
            load_credentials(settings)
        return str(info.value)

    assert error("/no/such/key.json") == (
        'c.toml: gcs.credentials[0].credentials_json: no such credentials file "/no/such/key.json", and the '
        "value is not JSON text either (give the path of a key file, or the key's JSON itself)")
    broken = '{"type": "service_account", "private_key": "PRIVATE-SENTINEL'
    assert error(broken) == ("c.toml: gcs.credentials[0].credentials_json: the credentials JSON text does "
                             "not decode (Unterminated string starting at line 1 column 44)")
    assert "SENTINEL" not in error('{"private_key": "PRIVATE-SENTINEL"}')
    not_json = tmp_path / "key.json"
    not_json.write_text("PRIVATE-SENTINEL")
    message = error(str(not_json))
    assert message.startswith(f"c.toml: gcs.credentials[0].credentials_json: credentials file {not_json} "
                              "is not JSON")
    assert "SENTINEL" not in message
    bad_key = json.dumps({"type": "service_account", "client_email": "x@y", "private_key": "PRIVATE-SENTINEL",
                          "token_uri": "https://oauth2.googleapis.com/token"})
    message = error(bad_key)
    assert message.startswith(
        "c.toml: gcs.credentials[0].credentials_json: unusable service_account credentials")
    assert "SENTINEL" not in message


@pytest.mark.parametrize(("exc", "kind"), [
    (api_exceptions.NotFound("No such object: b/k"), NotFound),
    (api_exceptions.PreconditionFailed("conditionNotMet"), Stale),
    (api_exceptions.Forbidden("x@y does not have storage.objects.get access"), AccessDenied),
    (api_exceptions.Unauthorized("Invalid Credentials"), AccessDenied),
    (api_exceptions.TooManyRequests("slow down"), Throttled),
    (api_exceptions.ServiceUnavailable("backend"), Throttled),
    (api_exceptions.InternalServerError("oops"), Transient),
    (api_exceptions.GatewayTimeout("late"), Transient),
    (api_exceptions.BadRequest("Invalid argument"), Rejected),
    (requests.exceptions.ConnectionError("refused"), Transient),
    (requests.exceptions.ReadTimeout("slow"), Transient),
    (google.auth.exceptions.TransportError("token endpoint unreachable"), Transient),
    (google.auth.exceptions.RefreshError("invalid_grant: Bad Request"), AccessDenied),
    (google.auth.exceptions.DefaultCredentialsError("none"), NoCredentials),
])
def test_sdk_errors_map_to_one_hierarchy(exc: Exception, kind: type) -> None:
    assert type(translate(exc, "GET gs://b/k")) is kind


def test_a_missing_bucket_says_so() -> None:
    error = translate(api_exceptions.NotFound("The specified bucket does not exist."), "LIST gs://b/")
    assert str(error) == "LIST gs://b/: the bucket does not exist"
    hint = str(translate(google.auth.exceptions.DefaultCredentialsError("x"), "LIST gs://b/"))
    assert "GOOGLE_APPLICATION_CREDENTIALS" in hint and "gcloud auth application-default login" in hint


def test_transient_failures_are_retried_then_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    store = GcsStore(GcsSettings(bucket="b", endpoint="http://127.0.0.1:1", anonymous=True),
                     RetryConfig(attempts=3, base_delay=0.0, max_delay=0.0, budget=10))
    failures = [api_exceptions.ServiceUnavailable("busy"), requests.exceptions.ConnectionError("reset")]

    def page(*args: object) -> tuple[list[object], list[str], None]:
        if failures:
            raise failures.pop(0)
        return [], ["a/"], None

    monkeypatch.setattr(store, "_page", page)
    assert store.list("", "/").prefixes == ["a/"]
    failures[:] = [api_exceptions.InternalServerError("oops")] * 3
    with pytest.raises(StoreUnavailable, match="gave up after 3 attempt"):
        store.list("", "/")
    failures[:] = [api_exceptions.ServiceUnavailable("busy")] * 6  # throttled: half an attempt each
    with pytest.raises(StoreUnavailable, match="gave up after 6 attempt"):
        store.list("", "/")


def test_page_tokens_round_trip() -> None:
    for server, skip in [(None, 0), ("opaque:with:colons", 0), (None, 7), ("tok", 3)]:
        assert _decode_token(_encode_token(server, skip)) == (server, skip)
    assert _decode_token(None) == (None, 0)
