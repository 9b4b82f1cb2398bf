"""Which endpoint, credentials and options one s3:// URL gets, most specific first.

Order, as ClearML users expect: the `[[s3.credentials]]` entry for the bucket (on that host, when
the entry names one), then the entry for the host, then the `[s3]` defaults, then boto3's own
chain (environment, AWS_PROFILE and shared files, container and instance roles) when
`use_credentials_chain` is set or no key is given anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mountfs.config import Config, S3Credentials, StoreUrl

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    endpoint_url: str | None  # None: AWS itself
    region: str
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    multipart: bool = True
    kms_key_id: str | None = None
    pool_connections: int = 32
    path_style: bool = False

    @property
    def uses_chain(self) -> bool:
        return self.key is None

    def describe(self) -> str:
        """Where this is, for messages; never a secret."""
        where = self.endpoint_url or f"AWS {self.region}"
        return f"s3://{self.bucket} at {where}"


def _entry_for(url: StoreUrl, entries: tuple[S3Credentials, ...]) -> S3Credentials | None:
    for entry in entries:  # a bucket entry wins over a host entry
        if entry.bucket == url.bucket and entry.host in (None, url.host):
            return entry
    for entry in entries:
        if entry.bucket is None and entry.host is not None and entry.host == url.host:
            return entry
    return None


def resolve(url: StoreUrl, config: Config) -> S3Settings:
    s3 = config.s3
    entry = _entry_for(url, s3.credentials)
    key = secret = token = None
    if not s3.use_credentials_chain:
        if entry is not None and entry.key:
            key, secret, token = entry.key, entry.secret, entry.token
        elif s3.key:
            key, secret, token = s3.key, s3.secret, s3.token
    region = ((entry.region if entry else None) or s3.region or os.environ.get("AWS_REGION")
              or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)
    endpoint = None
    if url.host:
        scheme = "https" if (entry.secure if entry else True) else "http"
        endpoint = f"{scheme}://{url.host}"
    return S3Settings(
        bucket=url.bucket, endpoint_url=endpoint, region=region, key=key, secret=secret, token=token,
        verify=entry.verify if entry else True,
        multipart=entry.multipart if entry else True,
        kms_key_id=entry.kms_key_id if entry else None,
        pool_connections=s3.boto3.pool_connections,
        path_style=url.host is not None,
    )
