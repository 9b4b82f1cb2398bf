"""How a mount is built for direct access and path substitution (issue 7.5, 7.6), without mounting:
`-o cache_local`, substitution of each [[mount]] URL, and which MountRoots pass files through."""

from __future__ import annotations

from pathlib import Path

import pytest

from mountfs.mount import MountSetupError, load_config_with, make_roots, open_stores, parse_options
from mountfs.namespace.inodes import MountRoot


def roots_of(source: str, *options: str) -> list[MountRoot]:
    config = load_config_with(source, parse_options(list(options)))
    return make_roots(config, open_stores(config), None)


def test_cache_local_is_a_flag_in_fstab_form_too(tmp_path: Path) -> None:
    assert not parse_options(["cache_dir=/c"]).cache_local
    options = parse_options(["_netdev,allow_other,cache_local", f"cache_dir={tmp_path}"])
    assert options.cache_local and options.allow_other
    with pytest.raises(MountSetupError, match="unknown mount option 'cache_local=1'"):
        parse_options(["cache_local=1"])


def test_a_file_url_is_direct_unless_opted_out(tmp_path: Path) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    (root,) = roots_of(f"file://{folder}", f"cache_dir={tmp_path / 'c'}")
    assert root.direct and root.local_root == str(folder) and root.is_direct("any/key")
    (cached,) = roots_of(f"file://{folder}", f"cache_dir={tmp_path / 'c'}", "cache_local")
    assert not cached.direct and not cached.is_direct("any/key")
    config = tmp_path / "c.toml"
    config.write_text(f'direct_access = []\n[cache]\ndir = "{tmp_path / "c"}"\n'
                      f'[[mount]]\npath = "a"\nurl = "file://{folder}"\n')
    (off,) = roots_of(str(config))
    assert not off.direct and not off.is_direct("any/key")


def test_a_deeper_glob_makes_only_matching_keys_direct(tmp_path: Path) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[[direct_access]]\nurl = "file://{folder}/raw/*.bin"\n'
                      f'[cache]\ndir = "{tmp_path / "c"}"\n'
                      f'[[mount]]\npath = "a"\nurl = "file://{folder}"\n')
    (root,) = roots_of(str(config))
    assert not root.direct
    assert root.is_direct("raw/x.bin") and root.is_direct("raw/deep/y.bin")
    assert not root.is_direct("raw/x.txt") and not root.is_direct("other/x.bin")


def test_mount_urls_under_a_registered_prefix_are_substituted(tmp_path: Path) -> None:
    local = tmp_path / "nfs"
    (local / "x").mkdir(parents=True)
    config = tmp_path / "c.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path / "c"}"\n'
                      '[[path_substitution]]\nregistered_prefix = "s3://127.0.0.1:1/datasets/research/"\n'
                      f'local_prefix = "file://{local}"\n'
                      '[[mount]]\npath = "whole"\nurl = "s3://127.0.0.1:1/datasets/research"\n'
                      '[[mount]]\npath = "below"\nurl = "s3://127.0.0.1:1/datasets/research/x"\n'
                      '[[mount]]\npath = "other"\nurl = "s3://127.0.0.1:1/datasets/research2"\n')
    loaded = load_config_with(str(config), parse_options([]))
    urls = [m.url for m in loaded.mounts]
    assert [(u.scheme, u.bucket) for u in urls[:2]] == [("file", str(local)), ("file", str(local / "x"))]
    assert urls[2].raw == "s3://127.0.0.1:1/datasets/research2" and urls[2].scheme == "s3"


def test_a_substituted_url_cannot_leave_the_local_prefix_by_a_symlink(tmp_path: Path) -> None:
    """The part of a mount URL below the registered prefix is an object path, not a way out of the
    local copy: a symlink on it (here to a folder outside) fails the mount, and nothing is served."""
    local, outside = tmp_path / "nfs", tmp_path / "outside"
    (local / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_bytes(b"no")
    (local / "escape").symlink_to(outside)
    (local / "real" / "inner").symlink_to("..")
    rule = ('[[path_substitution]]\nregistered_prefix = "s3://127.0.0.1:1/datasets/research/"\n'
            f'local_prefix = "file://{local}"\n')
    for rest in ["escape", "real/inner/escape", "real/inner"]:
        config = tmp_path / "c.toml"
        config.write_text(f'[cache]\ndir = "{tmp_path / "c"}"\n{rule}'
                          f'[[mount]]\npath = "m"\nurl = "s3://127.0.0.1:1/datasets/research/{rest}"\n')
        loaded = load_config_with(str(config), parse_options([]))
        with pytest.raises(MountSetupError, match="through a symlink"):
            open_stores(loaded)
    config.write_text(f'[cache]\ndir = "{tmp_path / "c"}"\n{rule}'
                      '[[mount]]\npath = "m"\nurl = "s3://127.0.0.1:1/datasets/research/real"\n')
    (store,) = open_stores(load_config_with(str(config), parse_options([])))
    assert [o.key for o in store.list("", "/").objects] == ["inner"]


def test_a_registered_prefix_inside_a_mount_is_grafted_there(tmp_path: Path) -> None:
    research, deeper = tmp_path / "nfs-research", tmp_path / "nfs-deeper"
    config = tmp_path / "c.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path / "c"}"\n'
                      '[[path_substitution]]\nregistered_prefix = "s3://127.0.0.1:1/datasets/research/"\n'
                      f'local_prefix = "file://{research}"\n'
                      '[[path_substitution]]\nregistered_prefix = "s3://127.0.0.1:1/datasets/research/a/b/"\n'
                      f'local_prefix = "file://{deeper}"\n'
                      '[[path_substitution]]\nregistered_prefix = "s3://127.0.0.1:1/datasets2/x"\n'
                      f'local_prefix = "file://{deeper}"\n'
                      '[[mount]]\npath = "ds"\nurl = "s3://127.0.0.1:1/datasets"\n'
                      '[[mount]]\npath = "all/r"\nurl = "s3://127.0.0.1:1/datasets/research"\n'
                      '[[mount]]\npath = "top"\nurl = "s3://127.0.0.1:1/datasets/r"\n')
    loaded = load_config_with(str(config), parse_options([]))
    assert [(m.path, m.url.raw) for m in loaded.mounts] == [
        ("ds", "s3://127.0.0.1:1/datasets"),
        ("ds/research", f"file://{research}"),
        ("ds/research/a/b", f"file://{deeper}"),
        ("all/r", f"file://{research}"),  # the mount itself is substituted...
        ("all/r/a/b", f"file://{deeper}"),  # ...and the deeper prefix still grafted into it
        ("top", "s3://127.0.0.1:1/datasets/r"),
    ]


def test_a_glob_on_the_registered_url_makes_its_substitute_direct(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    research = tmp_path / "nfs-research"
    (research / "raw").mkdir(parents=True)
    config = tmp_path / "c.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path / "c"}"\n'
                      '[[direct_access]]\nurl = "s3://127.0.0.1:1/datasets/research/raw/*"\n'
                      '[[direct_access]]\nurl = "gs://never/*"\n'
                      '[[path_substitution]]\nregistered_prefix = "s3://127.0.0.1:1/datasets/research"\n'
                      f'local_prefix = "file://{research}"\n'
                      '[[mount]]\npath = "r"\nurl = "s3://127.0.0.1:1/datasets/research"\n')
    (root,) = roots_of(str(config))
    assert root.local_root == str(research) and not root.direct
    assert root.is_direct("raw/x.bin") and not root.is_direct("cooked/x.bin")
    assert "[[direct_access]] gs://never/* matches nothing served from a local path" in caplog.text
    assert "s3://127.0.0.1:1/datasets/research/raw/*" not in caplog.text


def test_a_content_type_entry_makes_only_files_of_that_type_direct(tmp_path: Path) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    config = tmp_path / "c.toml"
    config.write_text('[[direct_access]]\ncontent_type = "application/octet-stream"\n'
                      f'[[direct_access]]\nurl = "file://{folder}/docs/*"\ncontent_type = "text/*"\n'
                      f'[cache]\ndir = "{tmp_path / "c"}"\n'
                      f'[[mount]]\npath = "a"\nurl = "file://{folder}"\n')
    (root,) = roots_of(str(config))
    assert not root.direct
    assert root.is_direct("raw/x.bin") and root.is_direct("docs/readme.txt")
    assert not root.is_direct("raw/x.txt") and not root.is_direct("docs/x.png")
