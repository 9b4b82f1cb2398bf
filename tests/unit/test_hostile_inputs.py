"""Hostile inputs to the config loader, the URL grammar and the mount options: each is refused with
one clear line that names the key, never the value of a secret, and costs no more than its size."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mountfs import cli
from mountfs.config import MAX_CONFIG_SIZE, load_config, load_source, secret_values
from mountfs.errors import ConfigErrors
from mountfs.mount import MountSetupError, parse_options, prepare

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def errors_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path))
    return str(info.value)


def mount_toml(url: str = "file:///srv", path: str = "data") -> str:
    return f'[[mount]]\npath = "{path}"\nurl = "{url}"\n'


# --- reading the file --------------------------------------------------------------------------


def test_a_config_that_never_ends_is_refused_at_once() -> None:
    """/dev/zero was read whole (tens of GB, or a MemoryError traceback under a ulimit)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "mountfs", "config", "check", "/dev/zero"],
        capture_output=True, text=True, timeout=60, env=env,
        preexec_fn=lambda: __import__("resource").setrlimit(  # a slip must not take the machine down
            __import__("resource").RLIMIT_AS, (1 << 30, 1 << 30)),
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "/dev/zero: is not a regular file" in result.stderr


def test_a_config_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(mount_toml() + "# padding\n" * (MAX_CONFIG_SIZE // 10 + 1))
    with pytest.raises(ConfigErrors, match=r"big.toml: is larger than 1MiB, too large for a config file"):
        load_config(str(path))


def test_a_fifo_as_config_is_refused_without_waiting(tmp_path: Path) -> None:
    """Opening a FIFO for reading waited for a writer forever. The writer here only comes to end the
    wait of a loader that blocks, so the test fails rather than hangs if it does."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock() -> None:
        while not done.wait(2):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:
                assert exc.errno == errno.ENXIO  # no reader (yet)

    writer = threading.Thread(target=unblock, daemon=True)
    writer.start()
    try:
        with pytest.raises(ConfigErrors) as info:
            load_source(str(fifo))
    finally:
        done.set()
        writer.join()
    assert str(info.value) == f"{fifo}: is not a regular file (a pipe or a device?)"


def test_a_deeply_nested_config_is_one_error_not_a_traceback(tmp_path: Path) -> None:
    text = "x = " + "[" * 5000 + "]" * 5000 + "\n"
    assert errors_of(tmp_path, text) == f"{tmp_path}/c.toml: arrays or tables are nested too deeply to read"


def test_checking_many_mounts_takes_work_in_proportion_to_them(tmp_path: Path) -> None:
    """Every mount path was compared with every other one (20,000 mounts: minutes). Counted in
    Python function calls rather than seconds, so the test does not depend on the machine's load."""
    n = 2000
    path = tmp_path / "many.toml"
    path.write_text("".join(mount_toml(f"s3://bucket{i}/p", f"m{i}") for i in range(n)))
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        config = load_config(str(path))
    finally:
        sys.setprofile(None)
    assert len(config.mounts) == n
    assert calls < 200 * n


def test_mount_conflicts_are_still_found_among_many(tmp_path: Path) -> None:
    text = "".join(mount_toml(path=p) for p in ("a/b", "c", "a/b/c", "a", "c", "d/e/f", "d/e"))
    lines = errors_of(tmp_path, text).splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        'mount[2].path: mount path "a/b/c" is inside mount path "a/b" (mount[0] at line 2)',
        'mount[3].path: mount path "a" contains mount path "a/b" (mount[0] at line 2)',
        'mount[4].path: mount path "c" is already used by mount[1] at line 5',
        'mount[6].path: mount path "d/e" contains mount path "d/e/f" (mount[5] at line 17)',
    ]
    root = errors_of(tmp_path, mount_toml(path="a") + mount_toml(path=""))
    assert 'mount path "" (the mount root) cannot be combined with other mounts (mount[0] at line 2)' in root


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["secret", "key", "token", '"secret"'])
def test_an_unquoted_secret_is_not_echoed_in_the_hint(tmp_path: Path, key: str) -> None:
    message = errors_of(tmp_path, f"[s3]\n{key} = {SECRET}\n")
    assert SECRET not in message and SECRET[:8] not in message
    assert f'strings need quotes: write {key} = "..."' in message


@pytest.mark.parametrize("url", [
    f"s3://AKIAEXAMPLE:{SECRET}@minio.internal:9000/bucket",
    f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix",
    f"gs://user:{SECRET}@bucket/x",
    f"s3:AKIAEXAMPLE:{SECRET}@host:9000/bucket",
])  # fmt: skip
def test_credentials_in_a_url_are_refused_without_showing_them(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = errors_of(tmp_path, mount_toml(url))
    assert SECRET not in message and "AKIAEXAMPLE" not in message
    assert "carries credentials" in message and "***@" in message
    assert cli.main([url, str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "AKIAEXAMPLE" not in err and err.count("\n") == 1
    assert cli.main(["config", "check", url]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "AKIAEXAMPLE" not in err and err.count("\n") == 2


def test_an_endpoint_with_credentials_is_refused_without_showing_them(tmp_path: Path) -> None:
    message = errors_of(tmp_path, f'[s3]\nendpoint = "http://AKIA:{SECRET}@127.0.0.1:9000"\n' + mount_toml())
    assert SECRET not in message and "carries credentials" in message


# --- values that passed and failed later -------------------------------------------------------


def test_a_mount_path_segment_longer_than_a_file_name_is_refused(tmp_path: Path) -> None:
    message = errors_of(tmp_path, mount_toml(path="x/" + "a" * 300))
    assert 'mount[0].path: mount path segment "' in message and "is 300 bytes long (at most 255)" in message
    assert "a" * 41 not in message
    (tmp_path / "ok.toml").write_text(mount_toml(path="é" * 127))  # 254 bytes
    assert load_config(str(tmp_path / "ok.toml")).mounts[0].path == "é" * 127


@pytest.mark.parametrize("name", ["host", "bucket"])
def test_an_empty_host_or_bucket_of_an_s3_credentials_entry_is_refused(tmp_path: Path, name: str) -> None:
    text = f'[[s3.credentials]]\n{name} = ""\nkey = "AKIA"\nsecret = "{SECRET}"\n' + mount_toml()
    message = errors_of(tmp_path, text)
    assert f"c.toml:2: s3.credentials[0].{name}: must not be empty" in message
    assert SECRET not in message


@pytest.mark.parametrize("folder", ["/", "//", "/.", "/tmp/.."])
def test_the_root_directory_is_no_cache_dir(tmp_path: Path, folder: str) -> None:
    message = errors_of(tmp_path, f'[cache]\ndir = "{folder}"\n' + mount_toml())
    assert "c.toml:2: cache.dir: must not be the root directory" in message


@pytest.mark.parametrize("folder", ["/", "//", "/tmp/.."])
def test_the_root_directory_is_no_cache_dir_option(tmp_path: Path, folder: str) -> None:
    (tmp_path / "mnt").mkdir()
    with pytest.raises(MountSetupError, match=r"cache_dir=.*: the cache needs a folder of its own"):
        prepare("file:///srv", str(tmp_path / "mnt"), parse_options([f"cache_dir={folder}"]))


@pytest.mark.parametrize("key", ["AKIA\\u0000X", "AKIA/X", "AKIA\\nX"])
def test_an_access_key_that_no_store_could_take_is_refused(tmp_path: Path, key: str) -> None:
    """Such a key reached the store, which answered "400 Bad Request", reported as "cannot reach"."""
    message = errors_of(tmp_path, f'[s3]\nkey = "{key}"\nsecret = "{SECRET}"\n' + mount_toml())
    assert 'c.toml:2: s3.key: must not contain "/" or control characters' in message
    assert "AKIA" not in message and SECRET not in message


def test_a_secret_with_a_control_character_is_refused_without_showing_it(tmp_path: Path) -> None:
    message = errors_of(tmp_path, f'[s3]\nkey = "AKIA"\nsecret = "{SECRET}\\u0000"\n' + mount_toml())
    assert "c.toml:3: s3.secret: must not contain control characters" in message
    assert SECRET not in message


# --- unclear messages --------------------------------------------------------------------------


def test_a_doubled_equals_sign_gets_a_hint_that_makes_sense(tmp_path: Path) -> None:
    message = errors_of(tmp_path, '[cache]\ndir == "/var/cache/x"\n')
    assert message.endswith("(write one = between dir and its value)")


def test_a_control_character_in_a_url_is_shown_escaped(tmp_path: Path) -> None:
    message = errors_of(tmp_path, mount_toml("s3://buck\\u001bet/p"))
    assert "\x1b" not in message
    assert 'mount[0].url: URL "s3://buck\\x1bet/p" contains a control character' in message
    with pytest.raises(ConfigErrors) as info:
        load_source("s3://bucket/a\tb\x1b[2J")
    assert info.value.errors[0].format() == (
        's3://bucket/a\\tb\\x1b[2J: URL "s3://bucket/a\\tb\\x1b[2J" contains a control character'
    )


def test_a_file_name_with_control_characters_is_shown_on_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(str(tmp_path / "a\nb\x1b"))
    assert str(info.value) == f"{tmp_path}/a\\nb\\x1b: no such file (expected a TOML config file, or a URL " \
                              "such as s3://bucket/prefix)"


# --- mount options -----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", ["-1", "7777777", "1000", "8", "0x22", "", " 22", "٢"])
def test_a_umask_beyond_the_permission_bits_is_refused(umask: str) -> None:
    with pytest.raises(MountSetupError, match=r"umask=.*: expected octal digits from 000 to 777"):
        parse_options([f"umask={umask}"])


@pytest.mark.parametrize(("umask", "value"), [("022", 0o022), ("0", 0), ("777", 0o777), ("0027", 0o027)])
def test_umasks_within_the_permission_bits_are_taken(umask: str, value: int) -> None:
    assert parse_options([f"umask={umask}"]).umask == value


@pytest.mark.parametrize("option", ["uid=-1", "gid=-5", "uid=4294967295", "gid=1e3", "uid="])
def test_a_uid_or_gid_that_is_no_id_is_refused(option: str) -> None:
    with pytest.raises(MountSetupError, match=r"bad mount option [ug]id=.*: expected a number from 0"):
        parse_options([option])


def test_allow_other_and_allow_root_exclude_each_other() -> None:
    with pytest.raises(MountSetupError, match="allow_other and allow_root exclude each other"):
        parse_options(["allow_other,allow_root"])
    assert parse_options(["allow_root"]).allow_root


def test_a_log_file_in_a_missing_folder_is_refused_and_no_folder_made(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    (tmp_path / "b").mkdir()
    log = tmp_path / "nonexistent" / "dir" / "log"
    options = parse_options([f"log={log}", f"cache_dir={tmp_path / 'c'}"])
    with pytest.raises(MountSetupError, match=r"bad mount option log=.*: the folder .*/nonexistent/dir does"):
        prepare(f"file://{tmp_path / 'b'}", str(tmp_path / "mnt"), options)
    assert not (tmp_path / "nonexistent").exists()
    with pytest.raises(MountSetupError, match="is a directory, not a file"):
        prepare(f"file://{tmp_path / 'b'}", str(tmp_path / "mnt"), parse_options([f"log={tmp_path}"]))


def test_an_empty_mount_point_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """realpath("") is the current folder, which was mounted over."""
    (tmp_path / "b").mkdir()
    empty = tmp_path / "here"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(MountSetupError, match="the mount point is an empty string"):
        prepare(f"file://{tmp_path / 'b'}", "", parse_options([f"cache_dir={tmp_path / 'c'}"]))


def test_the_secrets_a_daemon_hides_in_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(
        f'[s3]\nkey = "AKIAVISIBLE"\nsecret = "{SECRET}"\n[[s3.credentials]]\nbucket = "b"\nkey = "AKIA2"\n'
        'secret = "cred-secret"\ntoken = "cred-token"\n[gcs]\ncredentials_json = "/etc/gcs.json"\n'
        '[[azure.containers]]\naccount_name = "acct"\ncontainer_name = "cont"\n'
        'connection_string = "AccountName=acct;AccountKey=a2V5a2V5a2V5;EndpointSuffix=x"\n' + mount_toml()
    )
    values = secret_values(load_config(str(path)))
    assert set(values) == {SECRET, "cred-secret", "cred-token", "env-session-token", "a2V5a2V5a2V5",
                           "AccountName=acct;AccountKey=a2V5a2V5a2V5;EndpointSuffix=x"}
