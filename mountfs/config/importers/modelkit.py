"""modelkit's environment variables (`mountfs modelkit: MOUNTPOINT`), read as modelkit's StorageProvider
and AssetsManager read them, into one mount at the mount point.

- `MODELKIT_STORAGE_PROVIDER` names the store: `s3`, `gcs`, `az` or `local`; `s3_ssm` (also written
  `s3ssm`) is the S3 driver modelkit had until 2021, whose `MODELKIT_STORAGE_BUCKET` names an AWS SSM
  parameter that holds the bucket's name: the parameter is read once, here.
- The mount is `MODELKIT_STORAGE_BUCKET` under `MODELKIT_STORAGE_PREFIX` (modelkit's default prefix
  is "modelkit-assets"). For `local` the bucket is a folder and the prefix a folder inside it.
- S3: the AWS_* variables are what boto3 reads anyway (keys, `AWS_SESSION_TOKEN`, `AWS_PROFILE`);
  `AWS_DEFAULT_REGION` becomes `[s3] region` and `S3_ENDPOINT` `[s3] endpoint`, as modelkit passes
  them to boto3.client; `AWS_KMS_KEY_ID` encrypts uploads with that KMS key, as modelkit's uploads do.
- GCS: `GOOGLE_APPLICATION_CREDENTIALS` is read by the gcs resolver itself. Azure: the container is
  the bucket, the account that of `AZURE_STORAGE_CONNECTION_STRING`, which the azure resolver reads.
- No provider ("pre-downloaded" mode): `MODELKIT_ASSETS_DIR` mounted read-only, straight from disk.

Missing or unusable variables are all reported together, each naming the provider that needs it.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

from mountfs.config.azure import parse_connection_string
from mountfs.config.importers import Imported, Note
from mountfs.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from mountfs.config.model import Config, StoreUrl

NAME = "modelkit"
SOURCE = "modelkit:"
PROVIDER = "MODELKIT_STORAGE_PROVIDER"
BUCKET = "MODELKIT_STORAGE_BUCKET"
PREFIX = "MODELKIT_STORAGE_PREFIX"
ASSETS_DIR = "MODELKIT_ASSETS_DIR"
DEFAULT_PREFIX = "modelkit-assets"
PROVIDERS = ("s3", "s3_ssm", "gcs", "az", "local")
READ_BY_STORES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_CONNECTION_STRING",
)  # fmt: skip
"""modelkit's variables that the stores' own resolvers (boto3's chain, google-auth, the azure resolver)
read from the daemon's environment, as modelkit's drivers do: nothing to copy into the document."""
READ_HERE = (
    PROVIDER, BUCKET, PREFIX, ASSETS_DIR, "S3_ENDPOINT", "AWS_DEFAULT_REGION", "AWS_KMS_KEY_ID",
)  # fmt: skip
_SSM_ALIASES = ("s3_ssm", "s3ssm")
Report = Callable[..., None]


def _literal(text: str) -> str:
    """A value the reader must not expand: "${" in an environment value is the user's text."""
    return text.replace("${", "$${")


def _key_path(prefix: str) -> str:
    return "/".join(p for p in prefix.split("/") if p)


def import_environment(env: dict[str, str]) -> Imported:
    """A document of one mount at the mount point (path ""); raises ConfigErrors naming every
    variable that is missing or unusable."""
    provider = env.get(PROVIDER, "").strip()
    errors: list[ConfigError] = []

    def error(key: str, message: str, hint: str | None = None) -> None:
        errors.append(ConfigError(message, file=SOURCE, key=key, hint=hint))

    def need(name: str, why: str) -> str | None:
        value = env.get(name, "").strip()
        if not value:
            error(name, f"is not set; {why} needs it")
            return None
        return value

    def need_bucket(why: str) -> str | None:
        """A bucket or container name: one URL segment, never a path or a URL of its own."""
        value = need(BUCKET, why)
        if value is not None and (any(c in value for c in "/@:?#") or any(c.isspace() for c in value)):
            error(BUCKET, f'"{value}" is not a bucket name', "give the name alone; the prefix goes in "
                  f"{PREFIX}")
            return None
        return value

    doc: dict[str, object] = {}
    notes: list[Note] = []
    mount: dict[str, object] | None = None
    prefix = _key_path(env.get(PREFIX, "").strip() or DEFAULT_PREFIX)  # modelkit: empty is the default
    if any(part in (".", "..") for part in prefix.split("/")):
        error(PREFIX, f'"{prefix}" must not contain "." or ".." segments')
    for_provider = f"{PROVIDER}={provider}"
    if not provider:
        folder = need(ASSETS_DIR, f"the pre-downloaded mode ({PROVIDER} unset or empty)")
        if folder is not None:
            path = _folder(folder, ASSETS_DIR, error)
            if path is not None:
                mount = {"path": "", "url": "file://" + _literal(path), "read_only": True}
    elif provider in ("s3", *_SSM_ALIASES):
        bucket = need(BUCKET, for_provider) if provider in _SSM_ALIASES else need_bucket(for_provider)
        s3: dict[str, object] = {}
        endpoint = env.get("S3_ENDPOINT", "").strip()
        if endpoint:
            s3["endpoint"] = _literal(endpoint)
        region = env.get("AWS_DEFAULT_REGION", "").strip()
        if region:
            s3["region"] = _literal(region)
        kms = env.get("AWS_KMS_KEY_ID", "").strip()
        if kms:
            s3["extra_args"] = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": _literal(kms)}
        if s3:
            doc["s3"] = s3
        if bucket is not None and provider in _SSM_ALIASES:
            bucket = _bucket_from_ssm(bucket, env, error)
        if bucket is not None:
            mount = {"path": "", "url": f"s3://{_literal(bucket)}/{_literal(prefix)}"}
    elif provider == "gcs":
        bucket = need_bucket(for_provider)
        if bucket is not None:
            mount = {"path": "", "url": f"gs://{_literal(bucket)}/{_literal(prefix)}"}
    elif provider == "az":
        bucket = need_bucket(for_provider)
        text = need("AZURE_STORAGE_CONNECTION_STRING", for_provider)
        account = None
        if text is not None:
            try:
                account = _account_of(text)
            except ConfigError as exc:
                error("AZURE_STORAGE_CONNECTION_STRING", exc.message, exc.hint)
        if bucket is not None and account is not None:
            mount = {"path": "", "url": f"az://{_literal(bucket)}@{_literal(account)}/{_literal(prefix)}"}
    elif provider == "local":
        folder = need(BUCKET, f"{for_provider} (the folder assets are fetched from)")
        if folder is not None:
            path = _folder(folder, BUCKET, error)
            if path is not None:
                below = os.path.join(path, prefix) if prefix else path
                mount = {"path": "", "url": "file://" + _literal(below)}
    else:
        error(PROVIDER, f'unknown storage provider "{provider}"',
              f"modelkit's providers are {', '.join(PROVIDERS)}; leave it unset (or empty) to mount "
              f"the pre-downloaded assets of {ASSETS_DIR} read-only")
    for name in ("MODELKIT_STORAGE_FORCE_DOWNLOAD", "MODELKIT_STORAGE_TIMEOUT_S", "MODELKIT_LAZY_DRIVER"):
        if env.get(name, "").strip():
            notes.append(Note(name, "has no equivalent: a mount reads objects when they are opened"))
    if errors:
        raise ConfigErrors(errors)
    assert mount is not None
    doc["mount"] = [mount]
    origins: dict[tuple[str | int, ...], str] = {
        ("mount", 0, "url"): ASSETS_DIR if not provider else BUCKET if provider != "az" else
        f"{BUCKET} (the container) or AZURE_STORAGE_CONNECTION_STRING (the account)",
        ("s3", "endpoint"): "S3_ENDPOINT",
        ("s3", "region"): "AWS_DEFAULT_REGION",
        ("s3", "extra_args"): "AWS_KMS_KEY_ID",
    }
    return Imported(NAME, doc, notes, origins)


def _folder(value: str, name: str, error: Report) -> str | None:
    """`value` as an absolute folder path (relative ones from the current directory, as modelkit
    takes them); reported when it is not a folder."""
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        error(name, f'"{value}" is not a folder', "modelkit needs an existing directory here")
        return None
    return path


def _account_of(text: str) -> str:
    """The storage account a connection string is for: AccountName, Azurite's for
    UseDevelopmentStorage=true, else the first label of BlobEndpoint's host (or Azurite's path)."""
    parsed = parse_connection_string(text, "AZURE_STORAGE_CONNECTION_STRING", SOURCE)
    if parsed.account:
        return parsed.account
    parts = urllib.parse.urlsplit(parsed.endpoint or "")
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    segment = parts.path.strip("/").split("/")[0]
    if segment:
        return segment
    raise ConfigError("the connection string names no account (no AccountName, and BlobEndpoint "
                      "does not show one)", file=SOURCE, key="AZURE_STORAGE_CONNECTION_STRING",
                      hint="add AccountName=... to it")


def _bucket_from_ssm(name: str, env: dict[str, str], error: Report) -> str | None:
    """The bucket an SSM parameter holds, as modelkit's s3ssm driver read it (boto3's ssm client,
    with the same AWS environment and S3 settings left aside)."""
    try:
        import boto3
        import botocore.exceptions

        session = boto3.session.Session(region_name=env.get("AWS_DEFAULT_REGION") or None)
        reply = session.client("ssm").get_parameter(Name=name, WithDecryption=True)
        value = str(reply["Parameter"]["Value"]).strip()
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        error(BUCKET, f'the SSM parameter "{name}" cannot be read ({code})',
              f"{PROVIDER}=s3_ssm reads the bucket's name from this AWS SSM parameter")
        return None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        error(BUCKET, f'the SSM parameter "{name}" cannot be read: {exc}')
        return None
    if not value or "/" in value:
        error(BUCKET, f'the SSM parameter "{name}" does not hold a bucket name')
        return None
    return value


def credentials_hint(store: str, config: Config, url: StoreUrl, entry: int | None) -> str:
    """modelkit's drivers take their credentials from the environment: the variables they read."""
    if store == "gcs":
        return (f"set GOOGLE_APPLICATION_CREDENTIALS (the key file) in the environment of "
                f"`mountfs {SOURCE}`, as modelkit's gcs driver reads it, or run "
                "`gcloud auth application-default login`")
    return (f"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the environment of "
            f"`mountfs {SOURCE}`, as modelkit's s3 driver reads them")
