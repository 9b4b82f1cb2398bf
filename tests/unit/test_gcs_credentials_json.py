"""credentials_json as ClearML (1.13.2 and later) takes it: the path of a key file, or else the
key's JSON text itself; both give the same service-account credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mountfs.config import load_config, parse_url
from mountfs.config.gcs import load_credentials, resolve
from mountfs.errors import ConfigError


def service_account_key() -> dict[str, Any]:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {"type": "service_account", "project_id": "key-project", "private_key_id": "1",
            "private_key": pem.decode(), "client_email": "mounter@key-project.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}


def credentials_of(tmp_path: Path, value: str) -> Any:
    path = tmp_path / "c.toml"
    path.write_text(f"[gcs]\ncredentials_json = '''{value}'''\n"
                    '[[mount]]\npath = "g"\nurl = "gs://bkt"\n')
    return load_credentials(resolve(parse_url("gs://bkt"), load_config(str(path))))


@pytest.mark.parametrize("form", ["path", "json"])
def test_credentials_json_is_a_path_or_the_json_itself(tmp_path: Path, form: str) -> None:
    key = service_account_key()
    text = json.dumps(key)
    if form == "path":
        (tmp_path / "key.json").write_text(text)
        text = str(tmp_path / "key.json")
    credentials, project = credentials_of(tmp_path, text)
    assert credentials.service_account_email == key["client_email"] and project == "key-project"


def test_neither_a_file_nor_json_names_the_key_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        credentials_of(tmp_path, str(tmp_path / "missing.json"))
    assert "gcs.credentials_json" in str(info.value) and "not JSON text either" in str(info.value)
