"""Which endpoint, credentials and project one gs:// URL gets, most specific first.

Credentials, as ClearML users expect them:
1. the `[[gcs.credentials]]` entry for the bucket whose `subdir` is the longest one containing the
   URL's prefix (an entry without `subdir` covers the whole bucket; an entry for a folder below the
   mounted prefix does not cover the mount and is not used for it);
2. `[gcs] credentials_json`;
3. the `GOOGLE_APPLICATION_CREDENTIALS` environment variable;
4. no credentials at all when the endpoint is an emulator: `STORAGE_EMULATOR_HOST` (as the SDK
   itself does) or an `endpoint` that is plain http (bearer tokens are never sent in clear text);
5. Google's application default credentials (`gcloud auth application-default login`, or the
   metadata server of GCE, GKE and Cloud Run).

`credentials_json` (and the environment variable) is a path to a key file or the key's JSON text
itself: the file is tried first, then the text is decoded. Any kind google-auth knows is accepted
(service account, authorized user, external account, impersonation).

Endpoint: `[gcs] endpoint`, then `STORAGE_EMULATOR_HOST` (with http:// added when it has no scheme),
else Google's own. Project: the entry's, then `[gcs] project`, then the key's own `project_id`; it
is not needed to read or write objects, only named to the client.

`resolve` does no I/O: the key is read when the store first builds its client (`load_credentials`),
so a bad key fails the mount's access check with a message naming the config key, never its content.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mountfs.config import importers
from mountfs.config.model import Config, GcsConfig, GcsCredentials, StoreUrl
from mountfs.config.reader import ABSENT, Reader, Table
from mountfs.config.urls import (
    check_endpoint,
    check_plain_name,
    clean_prefix,
)
from mountfs.errors import ConfigError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
ANONYMOUS = "anonymous (emulator endpoint)"
DEFAULT_CREDENTIALS = "application default credentials"
OWN_HINT = ("set credentials_json in [gcs] or [[gcs.credentials]], or GOOGLE_APPLICATION_CREDENTIALS, "
            "or run `gcloud auth application-default login`")


@dataclass(frozen=True)
class GcsSettings:
    bucket: str
    endpoint: str | None  # None: Google itself
    project: str | None = None
    credentials_json: str | None = field(default=None, repr=False)  # a path or the JSON text
    credentials_origin: str = DEFAULT_CREDENTIALS  # where they came from, for messages
    anonymous: bool = False
    config_source: str | None = None
    pool_connections: int = 32
    credentials_hint: str = field(default=OWN_HINT, compare=False)  # what to set when none are found

    def describe(self) -> str:
        """Where this is, for messages; never a secret."""
        return f"gs://{self.bucket} at {self.endpoint or 'Google Cloud Storage'}"


def _entry_for(url: StoreUrl, entries: tuple[GcsCredentials, ...]) -> tuple[int, GcsCredentials] | None:
    best: tuple[int, GcsCredentials] | None = None
    for index, entry in enumerate(entries):
        if entry.bucket != url.bucket:
            continue
        sub = entry.subdir
        if sub and url.prefix != sub and not url.prefix.startswith(sub + "/"):
            continue
        if best is None or len(sub) > len(best[1].subdir):
            best = (index, entry)
    return best


def normalize_endpoint(text: str) -> str:
    text = text.strip().rstrip("/")
    return text if "://" in text else "http://" + text


def resolve(url: StoreUrl, config: Config) -> GcsSettings:
    gcs = config.gcs
    found = _entry_for(url, gcs.credentials)
    entry = found[1] if found else None
    env_endpoint = os.environ.get(EMULATOR_ENV, "").strip()
    endpoint = gcs.endpoint.rstrip("/") if gcs.endpoint else None
    emulator = False
    if endpoint is None and env_endpoint:
        endpoint, emulator = normalize_endpoint(env_endpoint), True
    elif endpoint is not None and endpoint.startswith("http://"):
        emulator = True

    credentials_json: str | None = None
    origin = DEFAULT_CREDENTIALS
    if found is not None and found[1].credentials_json:
        credentials_json = found[1].credentials_json
        origin = config.key_name("gcs", "credentials", found[0], "credentials_json")
    elif gcs.credentials_json:
        credentials_json, origin = gcs.credentials_json, config.key_name("gcs", "credentials_json")
    elif os.environ.get(CREDENTIALS_ENV):
        credentials_json, origin = os.environ[CREDENTIALS_ENV], CREDENTIALS_ENV
    if credentials_json is not None and not credentials_json.lstrip().startswith("{"):
        # a path: made absolute now, since the daemon reads it again after it has moved to /
        credentials_json = os.path.abspath(os.path.expanduser(credentials_json.strip()))
    anonymous = credentials_json is None and emulator
    return GcsSettings(
        bucket=url.bucket,
        endpoint=endpoint,
        project=(entry.project if entry else None) or gcs.project,
        credentials_json=credentials_json,
        credentials_origin=ANONYMOUS if anonymous else origin,
        anonymous=anonymous,
        config_source="environment" if origin == CREDENTIALS_ENV else config.settings_source,
        credentials_hint=importers.credentials_hint("gcs", config, url, found and found[0], OWN_HINT),
    )


def credentials_info(settings: GcsSettings) -> dict[str, Any]:
    """The decoded key of `settings.credentials_json`: the file it names, else the text itself.

    Errors name the config key (or environment variable) and the path, never JSON text."""
    text = settings.credentials_json
    assert text is not None
    key = settings.credentials_origin

    def fail(message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, file=settings.config_source, key=key, hint=hint)

    path = os.path.expanduser(text.strip())
    looks_like_json = text.lstrip().startswith("{")
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise fail(f"cannot read credentials file {path}: {exc.strerror}") from None
        try:
            info = json.loads(raw)
        except ValueError as exc:
            raise fail(
                f"credentials file {path} is not JSON ({_json_error(exc)})",
                "expected a service account key or an authorized_user file",
            ) from None
    else:
        try:
            info = json.loads(text)
        except ValueError as exc:
            if looks_like_json:
                raise fail(f"the credentials JSON text does not decode ({_json_error(exc)})") from None
            raise fail(
                f'no such credentials file "{text}", and the value is not JSON text either',
                "give the path of a key file, or the key's JSON itself",
            ) from None
    if not isinstance(info, dict) or not isinstance(info.get("type"), str):
        raise fail(
            'the credentials JSON has no "type"',
            'expected a key with "type": "service_account", "authorized_user", ...',
        )
    return info


def _json_error(exc: ValueError) -> str:
    """Where JSON decoding failed, without quoting the document (it may hold a private key)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg.removesuffix(' at')} at line {exc.lineno} column {exc.colno}"
    return type(exc).__name__


def load_credentials(settings: GcsSettings) -> tuple[Credentials, str | None]:
    """(credentials, their project or None). Reads the key file, or asks google-auth's default chain."""
    import google.auth
    import google.auth.exceptions
    from google.auth.credentials import AnonymousCredentials

    if settings.anonymous:
        return AnonymousCredentials(), None  # type: ignore[no-untyped-call]
    if settings.credentials_json is None:
        credentials, project = google.auth.default(scopes=list(SCOPES))
        return credentials, project
    info = credentials_info(settings)
    kind = info["type"]
    try:
        if kind == "service_account":
            from google.oauth2 import service_account

            key = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=list(SCOPES)
            )
            return key, info.get("project_id")
        if kind == "authorized_user":
            from google.oauth2.credentials import Credentials as UserCredentials

            user = UserCredentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=list(SCOPES)
            )
            return user, None
        with warnings.catch_warnings():  # warns of keys from untrusted sources: this is the admin's
            warnings.simplefilter("ignore", DeprecationWarning)
            credentials, project = google.auth.load_credentials_from_dict(  # type: ignore[no-untyped-call]
                info, scopes=list(SCOPES)
            )
    except (google.auth.exceptions.DefaultCredentialsError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"unusable {kind} credentials: {_safe(exc)}",
            file=settings.config_source,
            key=settings.credentials_origin,
        ) from None
    return credentials, project


def _safe(exc: BaseException) -> str:
    """What went wrong, for a message: the exception's kind, and its text only when short and about
    the key's shape (google-auth's texts name missing fields; parser errors may quote key material)."""
    if isinstance(exc, KeyError):
        return f"the field {exc} is missing"
    text = str(exc)
    if len(text) > 200 or "-----" in text:
        return type(exc).__name__
    return text


# ---------------------------------------------------------------------------------------------------------
# The [gcs] section of a config file

_GCS_KEYS = ("project", "credentials_json", "endpoint", "credentials")
_GCS_CRED_KEYS = ("bucket", "subdir", "credentials_json", "project")


def gcs_section(r: Reader, root: Table) -> GcsConfig:
    path, t = r.sub(root, (), "gcs", _GCS_KEYS)
    creds: list[GcsCredentials] = []
    for ipath, c in r.tables(
        t.get("credentials", ABSENT), (*path, "credentials"), _GCS_CRED_KEYS, "gcs.credentials"
    ):
        bucket = r.checked_str(c, ipath, "bucket", check_plain_name, required=True)
        subdir = r.checked_str(c, ipath, "subdir", lambda s: clean_prefix(s, "subdir"))
        if bucket is not None:
            creds.append(GcsCredentials(
                bucket=bucket,
                subdir=clean_prefix(subdir, "subdir") if subdir else "",
                credentials_json=r.str_(c, ipath, "credentials_json"),
                project=r.str_(c, ipath, "project"),
            ))  # fmt: skip
    return GcsConfig(
        project=r.str_(t, path, "project"),
        credentials_json=r.str_(t, path, "credentials_json"),
        endpoint=r.checked_str(t, path, "endpoint", check_endpoint),
        credentials=tuple(creds),
    )
