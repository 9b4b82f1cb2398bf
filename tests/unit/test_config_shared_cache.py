"""[shared_cache] and `-o shared_cache=`: read, checked with file, line and key, secrets never shown."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mountfs.config import load_config
from mountfs.config.model import GiB, SharedCacheConfig
from mountfs.errors import ConfigErrors
from mountfs.mount import MountSetupError, load_config_with, parse_options

MOUNT = '[[mount]]\npath = "d"\nurl = "s3://127.0.0.1:9000/data/train"\n'


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(write(tmp_path, text))
    return [str(e) for e in info.value.errors]


def test_section_read_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MOUNT + '[shared_cache]\nurl = "s3://127.0.0.1:9001/fleet/mountfs"\n'))
    shared = config.shared_cache
    assert isinstance(shared, SharedCacheConfig)
    assert (shared.url.scheme, shared.url.host, shared.url.bucket, shared.url.prefix) == (
        "s3", "127.0.0.1:9001", "fleet", "mountfs")
    assert shared.write is True and shared.max_object_size is None and shared.timeout == 5.0
    assert load_config(write(tmp_path, MOUNT)).shared_cache is None


def test_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MOUNT + textwrap.dedent('''\
        [shared_cache]
        url = "gs://team-cache"
        write = false
        max_object_size = "10GiB"
        timeout = "750ms"
        ''')))
    assert config.shared_cache == SharedCacheConfig(config.shared_cache.url, False, 10 * GiB, 0.75)  # type: ignore[union-attr]
    assert config.shared_cache.url.raw == "gs://team-cache"  # type: ignore[union-attr]


def test_bad_values_each_with_line_and_key(tmp_path: Path) -> None:
    found = errors(tmp_path, MOUNT + textwrap.dedent('''\
        [shared_cache]
        write = "yes"
        max_object_size = 0
        timeout = "2h"
        size = 3
        '''))
    text = "\n".join(found)
    assert "c.toml:4: shared_cache.url: required key is missing" in text
    assert 'c.toml:5: shared_cache.write: expected a boolean (true or false), got string "yes"' in text
    assert "c.toml:6: shared_cache.max_object_size: must be greater than 0" in text
    assert "c.toml:7: shared_cache.timeout: must be at most 600s" in text
    assert "c.toml:8: shared_cache.size: unknown key" in text


@pytest.mark.parametrize(("url", "message"), [
    ("s3://127.0.0.1:9000/data", "overlaps the mount of s3://127.0.0.1:9000/data/train"),
    ("s3://127.0.0.1:9000/data/train/.cache", "overlaps the mount"),
    ("https://example.com/x", "not a bucket mountfs can keep a cache in"),
    ("ftp://host/b", 'unknown scheme "ftp://"'),
    ("s3://", "bucket"),
    ("s3://127.0.0.1:36025/", '"s3://127.0.0.1:36025/" names no bucket'),
    ("s3://127.0.0.1:36025", "names no bucket"),
    ("file:///nonexistent/x", "the folder /nonexistent/x does not exist"),
])
def test_bad_urls(tmp_path: Path, url: str, message: str) -> None:
    found = errors(tmp_path, MOUNT + f'[shared_cache]\nurl = "{url}"\n')
    assert len(found) == 1 and "shared_cache.url" in found[0] and message in found[0], found


@pytest.mark.parametrize(("mount", "shared"), [
    ("file:///data", "file:///data/cache"), ("file:///data/cache/", "file:///data"),
    ("file:///data", "file:///data/"), ("gs://bkt/x", "gs://bkt"), ("az://cont@acct/p", "az://cont@acct/p/q"),
])
def test_a_shared_cache_inside_a_mount_or_around_it_is_refused(tmp_path: Path, mount: str,
                                                               shared: str) -> None:
    found = errors(tmp_path, f'[[mount]]\npath = "d"\nurl = "{mount}"\n[shared_cache]\nurl = "{shared}"\n')
    assert len(found) == 1 and "overlaps the mount" in found[0], found


@pytest.mark.parametrize(("mount", "shared"), [
    ("file:///data", "file://{tmp}"), ("gs://bkt/x", "gs://bkt/y"), ("s3://h:1/bkt", "s3://h:2/bkt"),
])
def test_a_shared_cache_beside_a_mount_is_fine(tmp_path: Path, mount: str, shared: str) -> None:
    shared = shared.format(tmp=tmp_path)
    text = f'[[mount]]\npath = "d"\nurl = "{mount}"\n[shared_cache]\nurl = "{shared}"\n'
    assert load_config(write(tmp_path, text)).shared_cache is not None


def test_a_secret_in_the_url_is_never_shown(tmp_path: Path) -> None:
    found = errors(tmp_path, MOUNT + '[shared_cache]\nurl = "s3://AKIAX:sup3rsecretvalue@host:9000/b"\n')
    assert found and not any("sup3rsecretvalue" in e for e in found), found


def test_mount_option(tmp_path: Path) -> None:
    source = write(tmp_path, MOUNT + '[shared_cache]\nurl = "s3://127.0.0.1:9001/old"\nwrite = false\n')
    options = parse_options([f"cache_dir={tmp_path}/cache,shared_cache=s3://127.0.0.1:9001/fleet/p"])
    assert options.shared_cache == "s3://127.0.0.1:9001/fleet/p"
    shared = load_config_with(source, options).shared_cache
    assert shared is not None and shared.url.raw == "s3://127.0.0.1:9001/fleet/p" and shared.write is False
    shared = load_config_with("s3://127.0.0.1:9000/data", options).shared_cache
    assert shared is not None and shared.write is True and shared.url.bucket == "fleet"
    with pytest.raises(MountSetupError, match=r"shared_cache=s3://127\.0\.0\.1:9000/data/x: .*overlaps"):
        load_config_with("s3://127.0.0.1:9000/data", parse_options(["shared_cache=s3://127.0.0.1:9000/data/x"]))
    with pytest.raises(MountSetupError, match="bad mount option shared_cache=") as info:
        load_config_with(source, parse_options(["shared_cache=s3://KEYID:sup3rsecretvalue@h:1/b"]))
    assert "sup3rsecretvalue" not in str(info.value)
    with pytest.raises(MountSetupError, match=r"shared_cache=s3://h:1/: .*names no bucket"):
        load_config_with(source, parse_options(["shared_cache=s3://h:1/"]))
    with pytest.raises(MountSetupError, match=r"nonexistent/x: the folder .* does not exist"):
        load_config_with(source, parse_options(["shared_cache=file:///nonexistent/x"]))
