"""Config: a TOML file (or one URL) turned into frozen dataclasses, checked in full before anything mounts.

Every problem in a file is collected and reported together, each with its file, line, dotted key and a
hint, so `mountfs config check` shows a user everything to fix in one pass instead of one error per run.
Secrets never appear in a dataclass `repr()` or in an error message.

Key paths in errors are dotted, with 0-based indices for arrays of tables: `mount[1].url` is the `url`
of the second `[[mount]]`. Each store's section lives in its own module beside the resolver that turns
it into the settings of one bucket (`s3`, `gcs`, `azure`).
"""

from mountfs.config.load import (
    MAX_CONFIG_SIZE,
    SECRET_ENVIRONMENT,
    config_from_url,
    load_config,
    load_source,
    secret_values,
)
from mountfs.config.model import (
    AzureConfig,
    AzureContainer,
    CacheConfig,
    Config,
    DirectAccess,
    GcsConfig,
    GcsCredentials,
    MinFree,
    MountConfig,
    PathSubstitution,
    ReadConfig,
    RetryConfig,
    S3Boto3,
    S3Config,
    S3Credentials,
    StoreUrl,
    WriteConfig,
    default_cache_dir,
)
from mountfs.config.urls import SCHEMES, parse_url, shown_url
from mountfs.config.values import (
    InvalidValue,
    block_size_problem,
    format_size,
    parse_duration,
    parse_min_free,
    parse_size,
)
from mountfs.errors import ConfigErrors

__all__ = [
    "MAX_CONFIG_SIZE",
    "SCHEMES",
    "SECRET_ENVIRONMENT",
    "AzureConfig",
    "AzureContainer",
    "CacheConfig",
    "Config",
    "ConfigErrors",
    "DirectAccess",
    "GcsConfig",
    "GcsCredentials",
    "InvalidValue",
    "MinFree",
    "MountConfig",
    "PathSubstitution",
    "ReadConfig",
    "RetryConfig",
    "S3Boto3",
    "S3Config",
    "S3Credentials",
    "StoreUrl",
    "WriteConfig",
    "block_size_problem",
    "config_from_url",
    "default_cache_dir",
    "format_size",
    "load_config",
    "load_source",
    "parse_duration",
    "parse_min_free",
    "parse_size",
    "parse_url",
    "secret_values",
    "shown_url",
]
