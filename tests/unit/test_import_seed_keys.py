"""Every storage key of the seeds' documents (both ClearML documents, Supervisely's .env and
remote_links.yml, modelkit's variables) is honoured or refused by name, never silently dropped.

Each row sets one key on a small document of its format and loads it as a mount would. The key
passes when what the mount would use changes (the loaded config, or the settings and credentials
each store resolves from it), or when a note or an error names the key. A key read and then
ignored changes nothing and is named nowhere: that row fails."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mountfs.backends.s3 import _credentials_source
from mountfs.config import Config, azure, gcs, load_source, s3
from mountfs.errors import ConfigErrors, MountfsError


@dataclass(frozen=True)
class Row:
    fmt: str
    """clearml, env (Supervisely .env), yml (remote_links.yml) or modelkit."""
    key: str
    """The key as the seed writes it; a note or an error naming it counts as honoured by name."""
    edit: dict[str, str] = field(default_factory=dict)
    """Placeholder -> text (clearml, yml) or variable -> value (env, modelkit); "" removes a variable."""
    base: dict[str, str] = field(default_factory=dict)
    """Changes to the format's base document that this key needs (its provider, say)."""


# --- the base documents ---------------------------------------------------------------------------------

CLEARML = """
sdk {
  aws {
    s3 {
      key: "AKIADEFAULT"
      secret: "default-secret"
      region: ""
      S3_EXTRA
      credentials: [
        { bucket: "seed-bucket", key: "AKIABUCKET", secret: "bucket-secret"
          S3ENTRY_X
        }
        HOST_ENTRY
      ]
    }
    boto3 { BOTO3_EXTRA }
  }
  azure.storage {
    containers: [ { account_name: "seedaccount", account_key: "c2VlZA==", container_name: "seed-container"
                    AZURE_EXTRA
                  } ]
  }
  google.storage {
    project: "seed-project"
    credentials_json: "KEYFILE"
    GOOGLE_EXTRA
    credentials = [ { bucket: "seed-gbucket", credentials_json: "KEYFILE"
                      GCSENTRY_X
                    } ]
  }
  storage {
    cache { default_base_dir: "/var/cache/seed"
            CACHE_EXTRA
          }
    STORAGE_EXTRA
  }
}
"""
CLEARML_SLOTS = ("S3_EXTRA", "S3ENTRY_X", "HOST_ENTRY", "BOTO3_EXTRA", "AZURE_EXTRA", "GOOGLE_EXTRA",
                 "GCSENTRY_X", "CACHE_EXTRA", "STORAGE_EXTRA")
YML = """
my-car-datasets:
  provider: minio
  endpoint: minio.seed
  port: 9000
  access_key: AKIASEED
  secret_key: seed-secret
  MINIO_EXTRA
  buckets:
  - cars_2020_20_10
my-boats-datasets:
  provider: azure
  endpoint: https://seedaccount.blob.core.windows.net
  access_key: seedaccount
  secret_key: c2VlZA==
  buckets:
  - boats_bucket_2020_20_10
my-planes-datasets:
  provider: google
  endpoint: storage.googleapis.com
  credentials_path: KEYFILE
  buckets:
  - planes_bucket_2020_20_10
my-local:
  provider: fs
  path: /srv/seed
  buckets:
  - local-datasets
"""
YML_SLOTS = ("MINIO_EXTRA",)
ENV = {"JUPYTER_DOWNLOAD_FILES_BEFORE_START": "true", "STORAGE_JUPYTER_SYNC": "true",
       "STORAGE_PROVIDER": "minio", "STORAGE_ENDPOINT": "minio.seed", "STORAGE_PORT": "9000",
       "STORAGE_ACCESS_KEY": "AKIASEED", "STORAGE_SECRET_KEY": "seed-secret"}
MODELKIT = {"MODELKIT_STORAGE_PROVIDER": "s3", "MODELKIT_STORAGE_BUCKET": "seed-bucket"}
ENVIRONMENT = ("MODELKIT_STORAGE_PROVIDER", "MODELKIT_STORAGE_BUCKET", "MODELKIT_STORAGE_PREFIX",
               "MODELKIT_ASSETS_DIR", "S3_ENDPOINT", "AWS_KMS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_REGION",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
               "GOOGLE_APPLICATION_CREDENTIALS",
               "STORAGE_EMULATOR_HOST", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT",
               "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "CLEARML_CONFIG_FILE")
ENV_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret"}
CONNECTION = ("DefaultEndpointsProtocol=https;AccountName={};AccountKey=c2VlZA==;"
              "EndpointSuffix=core.windows.net")


OVERRIDE = "docker-compose.override.yml"
"""An edit of this name writes the Supervisely file's docker-compose.override.yml beside it."""
GOOGLE_ENV = {"STORAGE_PROVIDER": "google", "STORAGE_ENDPOINT": "storage.googleapis.com", "STORAGE_PORT": "",
              "STORAGE_ACCESS_KEY": "", "STORAGE_SECRET_KEY": "", "STORAGE_CREDENTIALS_PATH": "/gcs.json"}


def clearml(key: str, **slots: str) -> Row:
    return Row("clearml", key, slots)


ROWS = [
    # clearml-storage.md and clearml-storage-older.txt: sdk.aws.s3
    clearml("sdk.aws.s3.key", S3_EXTRA='key: "AKIAOTHER"'),
    clearml("sdk.aws.s3.secret", S3_EXTRA='secret: "other-secret"'),
    clearml("sdk.aws.s3.region", S3_EXTRA='region: "eu-west-3"'),
    clearml("sdk.aws.s3.token", S3_EXTRA='token: "session-token"'),
    clearml("sdk.aws.s3.use_credentials_chain", S3_EXTRA="use_credentials_chain: true"),
    clearml("sdk.aws.s3.extra_args", S3_EXTRA='extra_args: { ServerSideEncryption: "AES256" }'),
    clearml("sdk.aws.s3.extra_args", S3_EXTRA='extra_args: { ServerSideEncryption: "aws:kms", '
                                             'SSEKMSKeyId: "arn:aws:kms:eu-west-1:1:key/k" }'),
    clearml("sdk.aws.s3.extra_args", S3_EXTRA='extra_args: { StorageClass: "STANDARD_IA" }'),
    clearml("sdk.aws.s3.extra_args", S3_EXTRA='extra_args: { ACL: "bucket-owner-full-control" }'),
    clearml("sdk.aws.s3.extra_args", S3_EXTRA='extra_args: { Metadata: { team: "vision" } }'),
    clearml("sdk.aws.s3.extra_args.ContentDisposition", S3_EXTRA='extra_args: { ContentDisposition: "x" }'),
    clearml("sdk.aws.s3.credentials[0].bucket", S3ENTRY_X='bucket: "other-bucket"'),
    clearml("sdk.aws.s3.credentials[0].key", S3ENTRY_X='key: "AKIAOTHER"'),
    clearml("sdk.aws.s3.credentials[0].secret", S3ENTRY_X='secret: "other-secret"'),
    clearml("sdk.aws.s3.credentials[0].region", S3ENTRY_X='region: "eu-west-3"'),
    clearml("sdk.aws.s3.credentials[0].token", S3ENTRY_X='token: "session-token"'),
    clearml("sdk.aws.s3.credentials[0].use_credentials_chain", S3ENTRY_X="use_credentials_chain: true"),
    clearml("sdk.aws.s3.credentials[0].extra_args", S3ENTRY_X='extra_args: { StorageClass: "GLACIER_IR" }'),
    clearml("sdk.aws.s3.credentials[0].extra_args.Tagging", S3ENTRY_X='extra_args: { Tagging: "a=b" }'),
    clearml("sdk.aws.s3.credentials[0].host", S3ENTRY_X='host: "my-minio-host:9000"'),
    clearml("sdk.aws.s3.credentials[1].host",
            HOST_ENTRY='{ host: "my-minio-host:9000", key: "k", secret: "s" }'),
    clearml("sdk.aws.s3.credentials[0].multipart", S3ENTRY_X="multipart: false"),
    clearml("sdk.aws.s3.credentials[1].secure",
            HOST_ENTRY='{ host: "my-minio-host:9000", key: "k", secret: "s", secure: true }'),
    clearml("sdk.aws.s3.credentials[0].verify", S3ENTRY_X="verify: false"),
    clearml("sdk.aws.s3.credentials[0].verify", S3ENTRY_X='verify: "https://url/of/ca/bundle.crt"'),
    clearml("sdk.aws.s3.credentials[0].verify", S3ENTRY_X='verify: "/path/to/ca/bundle.crt"'),
    clearml("sdk.aws.boto3.pool_connections", BOTO3_EXTRA="pool_connections: 64"),
    clearml("sdk.aws.boto3.max_multipart_concurrency", BOTO3_EXTRA="max_multipart_concurrency: 4"),
    # sdk.azure.storage
    clearml("sdk.azure.storage.containers[0].account_name", AZURE_EXTRA='account_name: "otheraccount"'),
    clearml("sdk.azure.storage.containers[0].account_key", AZURE_EXTRA='account_key: "b3RoZXI="'),
    clearml("sdk.azure.storage.containers[0].container_name",
            AZURE_EXTRA='container_name: "other-container"'),
    # sdk.google.storage
    clearml("sdk.google.storage.project", GOOGLE_EXTRA='project: "other-project"'),
    clearml("sdk.google.storage.credentials_json", GOOGLE_EXTRA='credentials_json: "OTHERKEYFILE"'),
    clearml("sdk.google.storage.credentials[0].bucket", GCSENTRY_X='bucket: "other-gbucket"'),
    clearml("sdk.google.storage.credentials[0].subdir", GCSENTRY_X='subdir: "path/in/bucket"'),
    clearml("sdk.google.storage.credentials[0].project", GCSENTRY_X='project: "other-project"'),
    clearml("sdk.google.storage.credentials[0].credentials_json",
            GCSENTRY_X='credentials_json: "OTHERKEYFILE"'),
    # sdk.storage
    clearml("sdk.storage.cache.default_base_dir", CACHE_EXTRA='default_base_dir: "/var/cache/other"'),
    clearml("sdk.storage.cache.default_cache_manager_size", CACHE_EXTRA="default_cache_manager_size: 500"),
    clearml("sdk.storage.direct_access", STORAGE_EXTRA='direct_access: [ { url: "file://*" } ]'),
    clearml("sdk.storage.direct_access",
            STORAGE_EXTRA='direct_access: [ { url: "s3://seed-bucket/raw/*" } ]'),
    clearml("sdk.storage.direct_access[0].content_type",
            STORAGE_EXTRA='direct_access: [ { content_type: "video/*" } ]'),
    clearml("sdk.storage.path_substitution",
            STORAGE_EXTRA='path_substitution = [ { registered_prefix = "s3://seed-bucket/research", '
                          'local_prefix = "file:///mnt/shared/bucket/research" } ]'),
    # Supervisely .env (supervisely-cloud-storage.md)
    Row("env", "STORAGE_PROVIDER", {"STORAGE_PROVIDER": "azure", "STORAGE_ACCESS_KEY": "seedaccount",
                                    "STORAGE_SECRET_KEY": "c2VlZA==", "STORAGE_PORT": "",
                                    "STORAGE_ENDPOINT": "https://seedaccount.blob.core.windows.net"}),
    Row("env", "STORAGE_ENDPOINT", {"STORAGE_ENDPOINT": "minio.other"}),
    Row("env", "STORAGE_PORT", {"STORAGE_PORT": "443"}),
    Row("env", "STORAGE_ACCESS_KEY", {"STORAGE_ACCESS_KEY": "AKIAOTHER"}),
    Row("env", "STORAGE_SECRET_KEY", {"STORAGE_SECRET_KEY": "other-secret"}),
    Row("env", "STORAGE_IAM_ROLE", {"STORAGE_IAM_ROLE": "seed-role", "STORAGE_ACCESS_KEY": "",
                                    "STORAGE_SECRET_KEY": "", "STORAGE_ENDPOINT": "s3.amazonaws.com",
                                    "STORAGE_PORT": "443"},
        {"STORAGE_ENDPOINT": "s3.amazonaws.com", "STORAGE_PORT": "443"}),
    Row("env", "STORAGE_CREDENTIALS_PATH", {"STORAGE_CREDENTIALS_PATH": "OTHERKEYFILE"},
        {"STORAGE_PROVIDER": "google", "STORAGE_ENDPOINT": "storage.googleapis.com", "STORAGE_PORT": "",
         "STORAGE_ACCESS_KEY": "", "STORAGE_SECRET_KEY": "", "STORAGE_CREDENTIALS_PATH": "KEYFILE"}),
    Row("env", "DATA_PATH", {"DATA_PATH": "/srv/other"},
        {"STORAGE_PROVIDER": "http", "DATA_PATH": "/srv/seed", "STORAGE_ENDPOINT": "", "STORAGE_PORT": "",
         "STORAGE_ACCESS_KEY": "", "STORAGE_SECRET_KEY": ""}),
    Row("env", "CACHE_STORAGE_SIZE", {"CACHE_STORAGE_SIZE": "20g"}),
    Row("env", "CACHE_STORAGE_EXPIRES", {"CACHE_STORAGE_EXPIRES": "3d"}),
    Row("env", "CACHE_PREVIEWS_SIZE", {"CACHE_PREVIEWS_SIZE": "1g"}),
    Row("env", "CACHE_PREVIEWS_EXPIRES", {"CACHE_PREVIEWS_EXPIRES": "12h"}),
    Row("env", "CACHE_IMAGE_CONVERTER_SIZE", {"CACHE_IMAGE_CONVERTER_SIZE": "10g"}),
    Row("env", "CACHE_IMAGE_CONVERTER_EXPIRES", {"CACHE_IMAGE_CONVERTER_EXPIRES": "7d"}),
    Row("env", "JUPYTER_DOWNLOAD_FILES_BEFORE_START", {"JUPYTER_DOWNLOAD_FILES_BEFORE_START": "false"}),
    Row("env", "STORAGE_JUPYTER_SYNC", {"STORAGE_JUPYTER_SYNC": "false"}),
    # the docker-compose.override.yml the same document has users write beside the .env
    Row("env", "services.proxy.environment.CACHE_STORAGE_SIZE",
        {OVERRIDE: "services:\n  proxy:\n    environment:\n      CACHE_STORAGE_SIZE: 20g\n"}),
    Row("env", "services.proxy.environment.CACHE_PREVIEWS_SIZE",
        {OVERRIDE: "services:\n  proxy:\n    environment:\n      CACHE_PREVIEWS_SIZE: 1g\n"}),
    Row("env", "services.http-storage.volumes",
        {OVERRIDE: "services:\n  http-storage:\n    volumes:\n    - OTHERKEYFILE:/gcs.json:ro\n"},
        GOOGLE_ENV),
    # Supervisely remote_links.yml
    Row("yml", "my-car-datasets.provider", {"provider: minio": "provider: azure", "port: 9000": "",
                                            "endpoint: minio.seed": "endpoint: https://boats.blob.core.windows.net",
                                            "access_key: AKIASEED": "access_key: boats"}),
    Row("yml", "my-car-datasets.endpoint", {"endpoint: minio.seed": "endpoint: minio.other"}),
    Row("yml", "my-car-datasets.port", {"port: 9000": "port: 443"}),
    Row("yml", "my-car-datasets.access_key", {"access_key: AKIASEED": "access_key: AKIAOTHER"}),
    Row("yml", "my-car-datasets.secret_key", {"secret_key: seed-secret": "secret_key: other-secret"}),
    Row("yml", "my-car-datasets.iam_role", {"MINIO_EXTRA": "iam_role: seed-role"}),
    Row("yml", "my-car-datasets.region", {"MINIO_EXTRA": "region: eu-central-1"}),
    Row("yml", "my-car-datasets.buckets", {"- cars_2020_20_10": "- cars_2020_10_10"}),
    Row("yml", "my-boats-datasets.endpoint", {"endpoint: https://seedaccount.blob.core.windows.net":
                                              "endpoint: http://127.0.0.1:10000/seedaccount"}),
    Row("yml", "my-boats-datasets.access_key", {"access_key: seedaccount": "access_key: otheraccount"}),
    Row("yml", "my-boats-datasets.secret_key", {"secret_key: c2VlZA==": "secret_key: b3RoZXI="}),
    Row("yml", "my-planes-datasets.credentials_path",
        {"credentials_path: KEYFILE": "credentials_path: OTHERKEYFILE"}),
    Row("yml", "my-planes-datasets.endpoint",
        {"endpoint: storage.googleapis.com": "endpoint: http://127.0.0.1:4443"}),
    Row("yml", "my-local.path", {"path: /srv/seed": "path: /srv/other"}),
    Row("yml", "services.http-storage.volumes",
        {"credentials_path: KEYFILE": "credentials_path: /secret_planes.json",
         OVERRIDE: "services:\n  http-storage:\n    volumes:\n    - OTHERKEYFILE:/secret_planes.json:ro\n"},
        {"credentials_path: KEYFILE": "credentials_path: /secret_planes.json"}),
    # modelkit-storage-provider.txt
    Row("modelkit", "MODELKIT_STORAGE_PROVIDER", {"MODELKIT_STORAGE_PROVIDER": "gcs"}),
    Row("modelkit", "MODELKIT_STORAGE_BUCKET", {"MODELKIT_STORAGE_BUCKET": "other-bucket"}),
    Row("modelkit", "MODELKIT_STORAGE_PREFIX", {"MODELKIT_STORAGE_PREFIX": "assets/v2"}),
    Row("modelkit", "MODELKIT_ASSETS_DIR", {"MODELKIT_ASSETS_DIR": "ASSETS_OTHER"},
        {"MODELKIT_STORAGE_PROVIDER": "", "MODELKIT_STORAGE_BUCKET": "", "MODELKIT_ASSETS_DIR": "ASSETS"}),
    Row("modelkit", "AWS_ACCESS_KEY_ID", {"AWS_ACCESS_KEY_ID": "AKIAOTHER"}),
    Row("modelkit", "AWS_SECRET_ACCESS_KEY", {"AWS_SECRET_ACCESS_KEY": "other-secret"}, ENV_KEYS),
    Row("modelkit", "AWS_SESSION_TOKEN", {"AWS_SESSION_TOKEN": "session-token"}, ENV_KEYS),
    Row("modelkit", "AWS_DEFAULT_REGION", {"AWS_DEFAULT_REGION": "eu-west-3"}),
    Row("modelkit", "S3_ENDPOINT", {"S3_ENDPOINT": "http://127.0.0.1:9000"}),
    Row("modelkit", "AWS_DEFAULT_PROFILE", {"AWS_DEFAULT_PROFILE": "other"}),
    Row("modelkit", "AWS_PROFILE", {"AWS_PROFILE": "other"}),
    Row("modelkit", "AWS_KMS_KEY_ID", {"AWS_KMS_KEY_ID": "arn:aws:kms:eu-west-1:1:key/k"}),
    Row("modelkit", "GOOGLE_APPLICATION_CREDENTIALS", {"GOOGLE_APPLICATION_CREDENTIALS": "OTHERKEYFILE"},
        {"MODELKIT_STORAGE_PROVIDER": "gcs", "GOOGLE_APPLICATION_CREDENTIALS": "KEYFILE"}),
    Row("modelkit", "AZURE_STORAGE_CONNECTION_STRING",
        {"AZURE_STORAGE_CONNECTION_STRING": CONNECTION.format("otheraccount")},
        {"MODELKIT_STORAGE_PROVIDER": "az",
         "AZURE_STORAGE_CONNECTION_STRING": CONNECTION.format("seedaccount")}),
]


# --- loading a document and what its mounts would use ----------------------------------------------------

@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No AWS, Google or Azure settings of the machine; key files and a shared AWS profile of the test's."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    aws = tmp_path / "aws-credentials"
    aws.write_text("[default]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\n"
                   "[other]\naws_access_key_id = AKIAOTHERPROFILE\naws_secret_access_key = other-profile\n")
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    names = {}
    for name in ("KEYFILE", "OTHERKEYFILE"):
        path = tmp_path / f"{name.lower()}.json"
        path.write_text(json.dumps({"type": "authorized_user", "client_id": name, "client_secret": "x",
                                    "refresh_token": "y"}))
        names[name] = str(path)
    for name in ("ASSETS", "ASSETS_OTHER"):
        (tmp_path / name.lower()).mkdir()
        names[name] = str(tmp_path / name.lower())
    names["DIR"] = str(tmp_path)
    return names


def _fill(text: str, slots: tuple[str, ...], edit: dict[str, str], files: dict[str, str]) -> str:
    for old, new in edit.items():
        assert old in text, old
        text = text.replace(old, new)
    for slot in slots:
        text = text.replace(slot, "")
    for name in ("OTHERKEYFILE", "KEYFILE"):  # the longer first
        text = text.replace(name, files[name])
    return text


def _load(fmt: str, edit: dict[str, str], base: dict[str, str], files: dict[str, str],
          monkeypatch: pytest.MonkeyPatch) -> tuple[Config | ConfigErrors, tuple[Any, ...]]:
    """The document loaded, and what its mounts would use (in its environment, for modelkit's)."""
    folder = Path(files["DIR"])
    if fmt == "modelkit":
        values = {**MODELKIT, **base, **edit}
        with monkeypatch.context() as m:
            for name, value in values.items():
                if value:
                    m.setenv(name, files.get(value, value))
            try:
                loaded: Config | ConfigErrors = load_source("modelkit:")
            except ConfigErrors as exc:
                loaded = exc
            return loaded, _view(loaded)
    try:
        loaded = _read(fmt, edit, base, files, folder)
    except ConfigErrors as exc:
        loaded = exc
    return loaded, _view(loaded)


def _read(fmt: str, edit: dict[str, str], base: dict[str, str], files: dict[str, str],
          folder: Path) -> Config:
    override = folder / OVERRIDE
    text = edit.get(OVERRIDE)
    if text is None:
        override.unlink(missing_ok=True)
    else:
        override.write_text(text.replace("OTHERKEYFILE", files["OTHERKEYFILE"]))
    edit = {k: v for k, v in edit.items() if k != OVERRIDE}
    if fmt == "clearml":
        path = folder / "clearml.conf"
        path.write_text(_fill(CLEARML, CLEARML_SLOTS, edit, files))
        return load_source(str(path))
    if fmt == "yml":
        path = folder / "remote_links.yml"
        path.write_text(_fill(YML, YML_SLOTS, {**base, **edit}, files))
        return load_source(str(path))
    values = {k: files.get(v, v) for k, v in {**ENV, **base, **edit}.items() if v}
    path = folder / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return load_source(str(path))


def _store_view(config: Config) -> list[Any]:
    """What each mount's store would be given: its resolved settings and, for S3, the credentials."""
    out: list[Any] = []
    for mount in config.mounts:
        try:
            if mount.url.scheme == "s3":
                settings = s3.resolve(mount.url, config)
                try:
                    credentials: object = _credentials_source(settings, 5.0)()
                except Exception as exc:  # no credentials anywhere: a fact about the settings too
                    credentials = type(exc).__name__
                out.append((dataclasses.asdict(settings), credentials))
            elif mount.url.scheme == "gs":
                settings_g = gcs.resolve(mount.url, config)
                key = gcs.credentials_info(settings_g) if settings_g.credentials_json else None
                out.append((dataclasses.asdict(settings_g), key))
            elif mount.url.scheme == "az":
                out.append(dataclasses.asdict(azure.resolve(mount.url, config)))
            else:
                out.append(mount.url)
        except MountfsError as exc:
            out.append(str(exc))
    return out


def _view(loaded: Config | ConfigErrors) -> tuple[Any, ...]:
    if isinstance(loaded, ConfigErrors):
        return ("errors", [e.format() for e in loaded.errors])
    config = dataclasses.asdict(loaded)
    for name in ("source", "settings_file", "key_origins", "notes"):
        config.pop(name)
    return (repr(config), repr(_store_view(loaded)), loaded.notes)


def _named(loaded: Config | ConfigErrors, key: str) -> bool:
    texts = ([e.format() for e in loaded.errors] if isinstance(loaded, ConfigErrors) else list(loaded.notes))
    return any(key in text for text in texts)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.fmt}:{r.key}:{'/'.join(r.edit.values())[:40]}")
def test_every_seed_key_is_honoured_or_named(row: Row, world: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    base, base_view = _load(row.fmt, {}, row.base, world, monkeypatch)
    assert not isinstance(base, ConfigErrors), [e.format() for e in base.errors]
    loaded, view = _load(row.fmt, row.edit, row.base, world, monkeypatch)
    if isinstance(loaded, ConfigErrors):  # refused: by name, in one line each, without a secret's value
        assert _named(loaded, row.key), [e.format() for e in loaded.errors]
        assert not any(s in e.format() for e in loaded.errors for s in ("other-secret", "session-token"))
        return
    assert _named(loaded, row.key) or view != base_view, (
        f"{row.key} is read but changes nothing a mount uses and is named in no note")


def test_the_table_has_every_storage_key_the_seeds_write() -> None:
    """The rows cover the keys as the seeds spell them (a new seed key needs its row)."""
    seeds = Path(__file__).resolve().parents[1] / "data" / "seeds"
    keys = {row.key.rsplit(".", 1)[-1].split("[")[0] for row in ROWS} | {
        row.key.split(".")[-2].split("[")[0] for row in ROWS if "." in row.key}
    written: Callable[[str], set[str]] = lambda name: {  # noqa: E731
        line.split(":")[0].strip().strip("#").strip() for line in (seeds / name).read_text().splitlines()
        if ":" in line and not line.strip().startswith(("-", "{", "}"))}
    for name in ("clearml-s3.conf", "clearml-minio.conf", "clearml-minio-tls.conf", "clearml-azure.conf",
                 "clearml-gcs.conf", "clearml-cache.conf", "clearml-older.conf"):
        found = {k for k in written(name) if k.isidentifier() and k not in ("sdk", "aws", "s3", "google",
                                                                           "azure", "storage", "boto3")}
        assert found <= keys | {"containers", "cache", "credentials"}, (name, found - keys)
    env = {line.split("=")[0] for name in ("supervisely-minio.env", "supervisely-azure.env",
                                            "supervisely-google.env")
           for line in (seeds / name).read_text().splitlines() if "=" in line}
    assert env <= keys, env - keys
