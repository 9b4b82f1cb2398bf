"""Direct access globs and path substitution."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mountfs.config import ConfigErrors, DirectAccess, PathSubstitution, load_config
from mountfs.passthrough import (
    DEFAULT_DIRECT_ACCESS,
    Passthrough,
    Resolved,
    is_direct,
    local_path,
    substitute,
    substitution_base,
)

RULES = (
    PathSubstitution("s3://bucket/research", "file:///mnt/nfs/research"),
    PathSubstitution("s3://bucket/research/deep/", "file:///mnt/ssd/deep/"),
    PathSubstitution("gs://other", "s3://mirror/other"),
    PathSubstitution("file:///", "file:///chroot"),
)


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket/research", "file:///mnt/nfs/research"),  # the prefix itself
    ("s3://bucket/research/", "file:///mnt/nfs/research/"),  # a trailing slash is kept
    ("s3://bucket/research/a/b.bin", "file:///mnt/nfs/research/a/b.bin"),
    ("s3://bucket/research2/a", "s3://bucket/research2/a"),  # not a whole segment
    ("s3://bucket/researc", "s3://bucket/researc"),
    ("s3://bucket/research/deep", "file:///mnt/ssd/deep"),  # the longest prefix wins
    ("s3://bucket/research/deep/x", "file:///mnt/ssd/deep/x"),
    ("s3://bucket/research/deeper/x", "file:///mnt/nfs/research/deeper/x"),
    ("S3://bucket/research/x", "file:///mnt/nfs/research/x"),  # schemes compare case-insensitively
    ("s3://Bucket/research/x", "s3://Bucket/research/x"),  # the rest exactly
    ("s3://bucket/research%2Fx", "s3://bucket/research%2Fx"),  # %2F is a character, not a "/"
    ("s3://bucket/research/a%20b", "file:///mnt/nfs/research/a%20b"),  # taken literally
    ("gs://other/k", "s3://mirror/other/k"),
    ("gs://otherbucket/k", "gs://otherbucket/k"),
    ("file:///data/x", "file:///chroot/data/x"),  # a root prefix covers every path
    ("az://acct/cont/x", "az://acct/cont/x"),
    ("not a url", "not a url"),
])
def test_substitute(url: str, expected: str) -> None:
    assert substitute(url, RULES) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket/research/a/b", "/mnt/nfs/research"),  # the local folder the substitute must stay in
    ("s3://bucket/research/deep/x", "/mnt/ssd/deep"),
    ("file:///data/x", "/chroot"),
    ("gs://other/k", None),  # substituted by another store: no folder
    ("s3://bucket/elsewhere", None),  # not substituted
])
def test_substitution_base(url: str, expected: str | None) -> None:
    assert substitution_base(url, RULES) == expected
    assert Passthrough(path_substitution=RULES).substitution_base(url) == expected


def test_substitute_ignores_the_order_of_rules_and_trailing_slashes() -> None:
    rules = [PathSubstitution("s3://b/p/q/", "file:///q"), PathSubstitution("s3://b/p//", "file:///p/")]
    assert substitute("s3://b/p/q/r", rules) == substitute("s3://b/p/q/r", rules[::-1]) == "file:///q/r"
    assert substitute("s3://b/p/r", rules) == "file:///p/r"
    assert substitute("s3://b/p", []) == "s3://b/p"


@pytest.mark.parametrize(("url", "glob", "expected"), [
    ("file:///mnt/nfs/a", "file:///mnt/nfs/*", True),
    ("file:///mnt/nfs/a/b/c", "file:///mnt/nfs/*", True),  # * crosses "/", as in ClearML
    ("file:///mnt/nfs/", "file:///mnt/nfs/*", True),
    ("file:///mnt/nfs", "file:///mnt/nfs/*", False),
    ("file:///mnt/nfs2/a", "file:///mnt/nfs/*", False),
    ("file:///mnt/nfs/../etc/passwd", "file:///mnt/nfs/*", False),  # no climbing out of a glob
    ("file:///mnt//nfs/./a", "file:///mnt/nfs/*", True),  # normalized before matching
    ("FILE:///mnt/nfs/a", "file:///mnt/nfs/*", True),
    ("file:///mnt/nfs/a", "File:///mnt/nfs/*", True),
    ("file:///mnt/NFS/a", "file:///mnt/nfs/*", False),  # paths are case-sensitive
    ("s3://bucket/shards/x.tar", "s3://bucket/shards/*.tar", True),
    ("s3://bucket/shards/x.tar.gz", "s3://bucket/shards/*.tar", False),
    ("s3://bucket/shards/x1", "s3://bucket/shards/x?", True),
    ("s3://bucket/shards/x1", "s3://bucket/shards/x[0-9]", True),
    ("s3://bucket/shards/xa", "s3://bucket/shards/x[0-9]", False),
    ("s3://bucket/a%20b", "s3://bucket/a b", False),  # no percent-decoding
    ("file:///x", "s3://*", False),
    ("relative/path", "*", False),
])
def test_is_direct(url: str, glob: str, expected: bool) -> None:
    assert is_direct(url, [DirectAccess(glob)]) is expected


def test_with_no_globs_configured_every_file_url_is_direct() -> None:
    assert DEFAULT_DIRECT_ACCESS[0].url == "file://*" and len(DEFAULT_DIRECT_ACCESS) == 1
    assert is_direct("file:///anything/at/all") and is_direct("file:///x", [])
    assert not is_direct("s3://bucket/key")
    assert Passthrough().direct_access == DEFAULT_DIRECT_ACCESS
    configured = Passthrough([DirectAccess("file:///mnt/nfs/*")])
    assert not configured.is_direct("file:///home/x"), "configured globs replace the default"


@pytest.mark.parametrize(("url", "expected"), [
    ("file:///mnt/data/x.bin", "/mnt/data/x.bin"),
    ("file:///mnt/data/", "/mnt/data"),
    ("file:///", "/"),
    ("file:////mnt//a/./b", "/mnt/a/b"),
    ("FILE:///mnt/a", "/mnt/a"),
    ("file:///mnt/a%20b", "/mnt/a%20b"),  # literal, like every mountfs URL
    ("file:///mnt/a b", "/mnt/a b"),
    ("file:///mnt/../etc", None),
    ("file://relative/x", None),
    ("s3://bucket/key", None),
    ("/plain/path", None),
])
def test_local_path(url: str, expected: str | None) -> None:
    assert local_path(url) == expected


def test_resolve_substitutes_then_checks_the_globs(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent("""\
        [[mount]]
        path = "a"
        url = "s3://datasets/research"
        [[direct_access]]
        url = "file:///mnt/nfs/*"
        [[path_substitution]]
        registered_prefix = "s3://datasets/research"
        local_prefix = "file:///mnt/nfs/research"
        [[path_substitution]]
        registered_prefix = "s3://datasets/cold"
        local_prefix = "s3://archive/cold"
        """))
    rules = Passthrough.from_config(load_config(str(path)))
    assert rules.resolve("s3://datasets/research/x/y.bin") == Resolved(
        "file:///mnt/nfs/research/x/y.bin", True, "/mnt/nfs/research/x/y.bin")
    assert rules.resolve("s3://datasets/cold/z") == Resolved("s3://archive/cold/z", False, None)
    assert rules.resolve("s3://datasets/other") == Resolved("s3://datasets/other", False, None)
    assert rules.resolve("file:///tmp/x") == Resolved("file:///tmp/x", False, None)
    assert rules.local_path("file:///tmp/x") == "/tmp/x"


def test_a_direct_glob_on_a_store_url_is_direct_without_a_local_path() -> None:
    rules = Passthrough([DirectAccess("s3://scratch/*")])
    assert rules.resolve("s3://scratch/tmp/x") == Resolved("s3://scratch/tmp/x", True, None)


def test_an_empty_direct_access_list_turns_direct_access_off(tmp_path: Path) -> None:
    """`direct_access = []` is not the same as no direct_access key: nothing is direct, not even
    file:// URLs (the default glob applies only when the key is absent)."""
    mount = '[[mount]]\npath = "a"\nurl = "file:///data"\n'
    absent, empty = tmp_path / "absent.toml", tmp_path / "empty.toml"
    absent.write_text(mount)
    empty.write_text("direct_access = []\n" + mount)
    assert load_config(str(absent)).direct_access is None
    assert Passthrough.from_config(load_config(str(absent))).is_direct("file:///data")
    assert load_config(str(empty)).direct_access == ()
    off = Passthrough.from_config(load_config(str(empty)))
    assert off.direct_access == () and not off.is_direct("file:///data")
    assert off.resolve("file:///data/x") == Resolved("file:///data/x", False, None)
    assert Passthrough([]).direct_access == () and Passthrough(None).direct_access == DEFAULT_DIRECT_ACCESS


def test_content_type_globs_match_the_type_of_the_name() -> None:
    rules = Passthrough([DirectAccess(content_type="video/*")])
    assert rules.is_direct("file:///data/clip.mp4") and rules.is_direct("file:///data/a/b.MKV")
    assert not rules.is_direct("file:///data/notes.txt") and not rules.is_direct("file:///data/no-extension")
    assert not rules.is_direct("file:///data/clip.mp4", folder=True)  # a folder has no content type
    # an object whose store gives its type is matched by that type, case and parameters aside
    assert rules.is_direct("s3://b/blob", "Video/MP4; codecs=avc1")
    assert not rules.is_direct("s3://b/clip.mp4", "application/octet-stream")


def test_url_and_content_type_must_both_match() -> None:
    rules = Passthrough([DirectAccess("file:///mnt/nfs/*", "text/*")])
    assert rules.is_direct("file:///mnt/nfs/a/readme.txt")
    assert not rules.is_direct("file:///mnt/nfs/a/model.bin")
    assert not rules.is_direct("file:///home/readme.txt")
    assert not rules.is_direct("file:///mnt/nfs/", folder=True)
    url_only = Passthrough([DirectAccess("file:///mnt/nfs/*")])
    assert url_only.is_direct("file:///mnt/nfs/", folder=True)


def test_direct_access_entries_in_a_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    mount = '[[mount]]\npath = "a"\nurl = "file:///srv"\n'
    path.write_text('[[direct_access]]\ncontent_type = "video/*"\n[[direct_access]]\nurl = "file:///n/*"\n'
                    'content_type = "text/*"\n' + mount)
    assert load_config(str(path)).direct_access == (DirectAccess(None, "video/*"),
                                                    DirectAccess("file:///n/*", "text/*"))
    path.write_text('[[direct_access]]\ncontent_type = "text/plain; charset=utf-8"\n'
                    '[[direct_access]]\nurl = ""\ncontent_type = "text/*"\n' + mount)
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path))
    assert [e.key for e in info.value.errors] == ["direct_access[0].content_type", "direct_access[1].url"]
    assert "is not a content-type glob" in info.value.errors[0].message
