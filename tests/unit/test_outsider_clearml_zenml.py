"""A ClearML or ZenML user's settings tried as they come, hostile ones included: a clearml.conf whose
includes are a pipe, a device, a loop or too large; a file of includes only; a host written as a URL;
a presigned URL or a SAS pasted as SOURCE. Each gets one clear line naming what the user wrote, and
never hangs or shows a secret."""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path

import pytest

from mountfs.config import load_source
from mountfs.config.load import load_config
from mountfs.errors import ConfigErrors


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> str:
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path), need_mounts=False)
    return str(info.value)


def errors_within(path: Path, seconds: float = 20.0) -> str:
    """errors_of in a thread: a read that blocks for ever fails the test instead of hanging it."""
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(errors_of(path)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"reading {path.name} did not finish in {seconds}s")
    assert result, "the read raised something other than ConfigErrors"
    return result[0]


# --- includes ----------------------------------------------------------------------------------------


def test_an_included_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "common.conf"
    os.mkfifo(fifo)
    conf = write(tmp_path, "clearml.conf", f'include file("{fifo}")\nsdk.aws.s3.key: "a"\n')
    try:
        message = errors_within(conf)
    finally:  # a reader left blocked in open() gets EOF and ends
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK) if _has_reader(fifo) else None
        if fd is not None:
            os.close(fd)
    assert f"include {fifo}: not a regular file" in message


def _has_reader(fifo: Path) -> bool:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        return False
    return True


def test_an_included_device_is_refused(tmp_path: Path) -> None:
    conf = write(tmp_path, "clearml.conf", 'include file("/dev/null")\nsdk.aws.s3.key: "a"\n')
    assert "include /dev/null: not a regular file" in errors_within(conf)


def test_an_include_loop_is_named_as_a_loop(tmp_path: Path) -> None:
    write(tmp_path, "b.conf", 'include "a.conf"\n')
    conf = write(tmp_path, "a.conf", 'include "b.conf"\nsdk.aws.s3.key: "a"\n')
    message = errors_within(conf)
    assert "include loop: a.conf -> b.conf -> a.conf" in message
    assert "nested too deeply" not in message


def test_a_huge_or_binary_include_is_refused_like_the_file_itself(tmp_path: Path) -> None:
    (tmp_path / "huge.conf").write_text('sdk.aws.s3.key: "a"\n' + "# pad\n" * 200_000)
    (tmp_path / "bin.conf").write_bytes(b"\xff\xfe\x00garbage")
    conf = write(tmp_path, "clearml.conf", 'sdk.aws.s3.key: "a"\ninclude "huge.conf"\n')
    assert "huge.conf: larger than 1MiB" in errors_within(conf)
    conf = write(tmp_path, "clearml.conf", 'sdk.aws.s3.key: "a"\ninclude "bin.conf"\n')
    assert "bin.conf: not UTF-8 text" in errors_within(conf)


def test_a_missing_required_include_is_one_line_naming_it(tmp_path: Path) -> None:
    conf = write(tmp_path, "clearml.conf", 'include required("nope.conf")\nsdk.aws.s3.key: "a"\n')
    message = errors_within(conf)
    assert f"include {tmp_path / 'nope.conf'}: No such file or directory" in message
    assert "Errno" not in message


def test_an_optional_missing_include_is_skipped_and_includes_still_work(tmp_path: Path) -> None:
    write(tmp_path, "creds.conf", 'sdk.aws.s3 { key: "AK", secret: "SK" }\n')
    conf = write(tmp_path, "clearml.conf", """\
        include "nope.conf"
        include "creds.conf"
        sdk.aws.s3.credentials: [ { bucket: "my-bucket", key: "AK2", secret: "SK2" } ]
    """)
    config = load_config(str(conf))
    assert [m.path for m in config.mounts] == ["s3/my-bucket"]


def test_a_clearml_conf_of_includes_only_is_read_as_hocon(tmp_path: Path) -> None:
    write(tmp_path, "real.conf", 'sdk.aws.s3.credentials: [{ bucket: "my-bucket", key: "A", secret: "S" }]\n')
    conf = write(tmp_path, "clearml.conf", '# the team\'s settings\ninclude "real.conf"\n')
    assert [m.path for m in load_config(str(conf)).mounts] == ["s3/my-bucket"]


# --- what the reader reports, named as clearml.conf names it -----------------------------------------


def test_a_key_missing_from_sdk_aws_s3_is_named_as_clearml_names_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_KEY_UNSET", raising=False)
    conf = write(tmp_path, "clearml.conf", 'sdk.aws.s3 { key: ${?AWS_KEY_UNSET}, secret: "topsecret" }\n')
    message = errors_of(conf)
    assert "sdk.aws.s3.key: required when secret is set" in message
    assert "topsecret" not in message


def test_a_host_written_as_a_url_says_how_clearml_writes_it(tmp_path: Path) -> None:
    conf = write(tmp_path, "clearml.conf", """\
        sdk.aws.s3.credentials: [
            { host: "http://minio.local:9000", bucket: "data", key: "AK", secret: "SK" }
        ]
    """)
    message = errors_of(conf)
    assert 'sdk.aws.s3.credentials[0].host: "http://minio.local:9000" is a URL' in message
    assert 'write host: "minio.local:9000", secure: false' in message
    assert "\n" not in message  # that one error, not three about a "port" of "http:"


# --- URLs as SOURCE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "abfss://artifacts@devstoreaccount1.dfs.core.windows.net/zenml?sv=2022&sig=SECRETSIG",
    "az://artifacts@devstoreaccount1/zenml?sig=SECRETSIG",
    "s3://bucket/runs?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=SECRETSIG",
    "gs://bucket/runs?X-Goog-Signature=SECRETSIG",
])  # fmt: skip
def test_a_presigned_url_or_sas_as_source_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_source(url)
    message = str(info.value)
    assert "carries a signature" in message
    assert "SECRETSIG" not in message


def test_a_question_mark_in_a_key_is_still_a_prefix() -> None:
    (mount,) = load_source("s3://bucket/what?.txt").mounts
    assert mount.url.prefix == "what?.txt"


@pytest.mark.parametrize(("url", "where"), [
    ("az://:accountkey@artifacts/zenml", "[[azure.containers]]"),
    ("abfs://user:accountkey@artifacts/zenml", "[[azure.containers]]"),
    ("gs://user:pw@bucket/path", "[gcs] credentials_json"),
    ("s3://AK:SK@bucket/path", "[s3] or [[s3.credentials]]"),
])  # fmt: skip
def test_credentials_in_a_url_are_sent_to_the_section_of_its_store(url: str, where: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_source(url)
    message = str(info.value)
    assert where in message
    assert "accountkey" not in message and ":pw@" not in message and "AK:SK" not in message
    if where != "[s3] or [[s3.credentials]]":
        assert "[s3]" not in message


@pytest.mark.parametrize(("text", "line", "found"), [
    ('sdk {\n  aws.s3 { key "AK" }\n}\n', 2, "found '\"'"),  # the ":" forgotten
    ("Skip to main content\n\nClearML is able to\naws {\n", 3, "found 'ClearML'"),  # a page pasted
])  # fmt: skip
def test_a_hocon_typo_is_one_short_line_not_the_parsers_grammar(tmp_path: Path, text: str, line: int,
                                                                found: str) -> None:
    conf = tmp_path / "clearml.conf"
    conf.write_text(text)
    message = errors_of(conf)
    assert f"clearml.conf:{line}: HOCON syntax error" in message
    assert f"expected ':', '=' or '{{' after a key, {found}" in message
    assert "Suppress" not in message and len(message) < 300


def test_a_local_prefix_written_as_a_path_is_a_local_folder_as_in_clearml(tmp_path: Path) -> None:
    local = tmp_path / "shared"
    local.mkdir()
    conf = write(tmp_path, "clearml.conf", f"""\
        sdk.storage.path_substitution = [
            {{ registered_prefix = "s3://datasets/research/", local_prefix = "{local}/" }}
        ]
    """)
    (rule,) = load_source("s3://datasets/research", str(conf)).path_substitution
    assert rule.local_prefix.rstrip("/") == f"file://{local}"


@pytest.mark.parametrize(("entry", "key", "says"), [
    ('sdk.aws.s3.credentials: [{ bucket: "s3://my-bucket", key: "k", secret: "s" }]',
     "sdk.aws.s3.credentials[0].bucket", 'is not a plain name (a URL or path?) (write "my-bucket")'),
    ('sdk.google.storage.credentials: [{ bucket: "gs://my-bucket" }]',
     "sdk.google.storage.credentials[0].bucket", 'is not a plain name (a URL or path?) (write "my-bucket")'),
    ('sdk.aws.s3.credentials: [{ host: "AKIA:SECRETX@minio:9000", key: "k", secret: "s" }]',
     "sdk.aws.s3.credentials[0].host", "carries credentials"),
    ('sdk.azure.storage.containers: [{ account_name: "Acct_Bad", account_key: "a2V5", '
     'container_name: "c1x" }]',
     "sdk.azure.storage.containers[0]", 'Azure storage account name "Acct_Bad"'),
])  # fmt: skip
def test_a_bad_bucket_host_or_account_is_one_error_on_the_key_that_holds_it(tmp_path: Path, entry: str,
                                                                           key: str, says: str) -> None:
    conf = write(tmp_path, "clearml.conf", entry + "\n")
    message = errors_of(conf)
    assert f"{key}: " in message and says in message
    assert "\n" not in message, message  # not again as a mount path, a port of "s3:" or container_name
    assert "SECRETX" not in message


def test_an_error_in_the_source_url_names_the_url_not_a_mount_of_the_settings_file(tmp_path: Path) -> None:
    conf = write(tmp_path, "clearml.conf", """\
        sdk.azure.storage.containers: [
            { account_name: "artifacts", account_key: "a2V5" },
            { account_name: "devstoreaccount1", account_key: "a2V5", container_name: "zenml" }
        ]
    """)
    with pytest.raises(ConfigErrors) as info:
        load_source("az://other/run1", str(conf))
    (error,) = info.value.errors
    assert error.file == "az://other/run1" and error.key is None
    assert 'container "other" of which account?' in error.message
    assert "mount[0]" not in str(info.value)


def test_a_clearml_conf_written_in_toml_says_so(tmp_path: Path) -> None:
    conf = write(tmp_path, "clearml.conf", """\
        [sdk.aws.s3]
        key = "AK"
        secret = "SK"
    """)
    message = errors_of(conf)
    assert "clearml.conf:2: HOCON syntax error" in message
    assert "this is TOML, which ClearML does not read" in message


@pytest.mark.parametrize("config", [None, "settings"])
def test_a_url_pasted_with_blanks_around_it_is_that_url_not_a_missing_file(tmp_path: Path,
                                                                          config: str | None) -> None:
    settings = write(tmp_path, "mountfs.toml", '[s3]\nkey = "AK"\nsecret = "SK"\n')
    (mount,) = load_source(" s3://zenml-artifacts/runs ", str(settings) if config else None).mounts
    assert (mount.url.bucket, mount.url.prefix) == ("zenml-artifacts", "runs")


def test_a_ca_bundle_url_with_a_sas_does_not_show_its_signature_when_it_fails(tmp_path: Path) -> None:
    from mountfs.backends.s3 import fetch_ca_bundle
    from mountfs.errors import Misconfigured
    from mountfs.mount import MountSetupError

    url = "https://127.0.0.1:1/ca.crt?sv=2022-11-02&se=2030-01-01&sig=SIGSECRETX%3D"
    with pytest.raises(Misconfigured) as info:
        fetch_ca_bundle(url, str(tmp_path), timeout=5)
    shown = str(MountSetupError(f"cannot use s3://127.0.0.1:8333/data: {info.value}"))
    assert "cannot fetch the CA bundle" in shown
    assert "SIGSECRETX" not in shown and "sig=***" in shown


@pytest.mark.parametrize(("verify", "says"), [
    ('"https://user:PASSX@ca.example.com/ca.crt"', "a CA bundle URL with a user or password"),
    ('"false"', '"false" is a string, not a file name (write false without quotes)'),
    ("${MOUNTFS_TEST_VERIFY}", '"false" is a string, not a file name'),  # HOCON's env values are strings
])  # fmt: skip
def test_a_verify_that_cannot_work_is_told_at_check_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         verify: str, says: str) -> None:
    monkeypatch.setenv("MOUNTFS_TEST_VERIFY", "false")
    monkeypatch.chdir(tmp_path)
    conf = write(tmp_path, "clearml.conf", f"""\
        sdk.aws.s3.credentials: [
            {{ host: "minio.local:9000", bucket: "data", key: "AK", secret: "SK", verify: {verify} }}
        ]
    """)
    message = errors_of(conf)
    assert "sdk.aws.s3.credentials[0].verify: " + says in message
    assert "PASSX" not in message


# The storage parts of ClearML's own default sdk.conf (clearml/config/default/sdk.conf, recent versions),
# as clearml-init users have them: keys newer than the seeds must not be taken for typos.
NEW_DEFAULTS = """\
sdk {
    storage {
        cache {
            default_base_dir: "~/.clearml/cache"
            disk_space_file_size_strategy {
                enabled: false
                size {
                    max_used_bytes = -1
                    min_free_bytes = 10GB
                }
                zero_file_size_check: false
                file_entry_lookup_size: 0
            }
        }
        direct_access: [
            { url: "file://*" }  # file-urls are always directly referenced
        ]
        http.legacy_fileservers: []
    }
    aws {
        s3 {
            region: ""
            key: ""
            secret: ""
            use_credentials_chain: false
            extra_args: {}
            credentials: [
                { bucket: "my-bucket-name", key: "AK", secret: "SK" }
            ]
        }
        boto3 {
            pool_connections: 512
            max_multipart_concurrency: 16
            multipart_threshold: 8388608 # 8MB
            multipart_chunksize: 8388608 # 8MB
            addressing_style: "auto"
        }
    }
    google.storage {
    }
    azure.storage {
    }
}
"""


def test_the_storage_keys_of_clearmls_current_default_sdk_conf_are_read(tmp_path: Path) -> None:
    conf = write(tmp_path, "clearml.conf", NEW_DEFAULTS)
    config = load_config(str(conf))
    assert [m.path for m in config.mounts] == ["s3/my-bucket-name"]
    assert config.cache.min_free.size == 0  # the strategy is disabled: its limits are not taken
    assert config.s3.addressing_style == "auto"


def test_an_enabled_disk_space_strategy_sets_the_cache_limits(tmp_path: Path) -> None:
    text = NEW_DEFAULTS.replace("enabled: false", "enabled: true").replace("max_used_bytes = -1",
                                                                           "max_used_bytes = 50GB")
    config = load_config(str(write(tmp_path, "clearml.conf", text)))
    assert config.cache.max_size == 50 * 10**9
    assert config.cache.min_free.size == 10 * 10**9


def test_an_included_directory_is_skipped_as_pyhocon_skips_it_unless_required(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    conf = write(tmp_path, "clearml.conf", 'include "conf.d"\nsdk.aws.s3 { key: "AK", secret: "SK" }\n')
    assert load_config(str(conf), need_mounts=False).s3.key == "AK"
    conf = write(tmp_path, "clearml.conf", 'include required("conf.d")\nsdk.aws.s3.key: "AK"\n')
    assert f"include {tmp_path / 'conf.d'}: is a directory" in errors_of(conf)


@pytest.mark.parametrize(("text", "key"), [
    ("sdk.aws.boto3.pool_connections: 99999999999999999999999999\n", "sdk.aws.boto3.pool_connections"),
    ("sdk.aws.boto3.max_multipart_concurrency: 5120000\n", "sdk.aws.boto3.max_multipart_concurrency"),
])  # fmt: skip
def test_a_connection_count_no_store_serves_is_refused_before_the_pool_is_built(tmp_path: Path, text: str,
                                                                               key: str) -> None:
    """urllib3 fills its pool with one slot per connection up front: 10**26 of them never finished."""
    message = errors_of(write(tmp_path, "clearml.conf", text))
    assert f"{key}: must be at most 4096" in message


def test_read_and_write_concurrency_are_bounded_too(tmp_path: Path) -> None:
    conf = write(tmp_path, "mountfs.toml", "[read]\nmax_concurrency = 100000\n[write]\nmax_concurrency = 0\n")
    message = errors_of(conf)
    assert "read.max_concurrency: must be at most 4096, got 100000" in message
    assert "write.max_concurrency: must be at least 1, got 0" in message


def test_an_include_by_file_url_goes_through_the_same_checks(tmp_path: Path) -> None:
    fifo = tmp_path / "common.conf"
    os.mkfifo(fifo)
    conf = write(tmp_path, "clearml.conf", f'include "file://{fifo}"\nsdk.aws.s3.key: "a"\n')
    message = errors_within(conf)  # a reader left blocked (without the check) is ended by _has_reader
    _has_reader(fifo)
    assert f"include {fifo}: not a regular file" in message
    conf = write(tmp_path, "clearml.conf", 'include url("file:///dev/zero")\nsdk.aws.s3.key: "a"\n')
    assert "include /dev/zero: not a regular file" in errors_within(conf)


def test_an_include_url_that_cannot_be_fetched_is_skipped_unless_required(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/common.conf?sig=SIGSECRETX"  # port 1: refused at once
    conf = write(tmp_path, "clearml.conf", f'include url("{url}")\nsdk.aws.s3 {{ key: "AK", secret: "S" }}\n')
    assert load_config(str(conf), need_mounts=False).s3.key == "AK"
    conf = write(tmp_path, "clearml.conf", f'include required(url("{url}"))\nsdk.aws.s3.key: "AK"\n')
    message = errors_within(conf)
    assert "include http://127.0.0.1:1/common.conf?sig=***: " in message and "refused" in message
