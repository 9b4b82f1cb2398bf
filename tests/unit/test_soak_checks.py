"""The soak's final check is not vacuous: a wrong, missing or stray object in a store is counted."""

from __future__ import annotations

from tests.reliability.soak import Samples, State, Store, verify_stores


def store_of(objects: dict[str, bytes]) -> Store:
    return Store("s3", objects.__setitem__, objects.__getitem__, lambda: list(objects))


def test_wrong_missing_and_stray_objects_are_counted() -> None:
    state = State()
    state.files = {"s3/same": b"abc", "s3/changed": b"hello", "s3/missing": b"12345678",
                   "gcs/elsewhere": b"not in this store"}
    state.uncertain = {"s3/unknown"}
    objects = {"same": b"abc", "changed": b"hellO", "stray": b"x", "dir/": b"", "unknown": b"?"}
    verified, lost, strays = verify_stores({"s3": store_of(objects)}, state)
    assert verified == len(b"abc") + len(b"hello")
    assert lost == len(b"hello") + len(b"12345678")
    assert state.wrong_bytes == 1
    assert strays == ["s3/stray"]  # not the directory marker, not the file whose last operation failed
    assert len(state.failures) == 2


def test_a_marker_of_a_folder_that_is_gone_is_a_stray() -> None:
    state = State()
    objects = {"kept/": b"", "gone/": b"", "kept/sub/": b""}
    _, _, strays = verify_stores({"s3": store_of(objects)}, state, {"s3/kept", "s3/kept/sub"})
    assert strays == ["s3/gone/"]


def test_compare_counts_every_differing_byte_and_the_length_difference() -> None:
    state = State()
    state.compare("x", b"abcdef", b"abXdeYgh")
    assert state.wrong_bytes == 2 + 2
    assert state.bytes_verified == 8
    assert "first difference at offset 2" in state.failures[0]


def test_open_files_or_threads_that_keep_rising_are_a_leak_and_a_warm_level_is_not() -> None:
    warm = Samples(rss=[100] * 9, fds=[20, 50, 55, 52, 54, 57, 53, 55, 56],
                   threads=[4, 20, 22, 23, 22, 23, 24, 23, 23])
    assert warm.rising() == []
    leaking = Samples(rss=[100] * 9, fds=[20, 50, 60, 70, 90, 110, 140, 170, 200],
                      threads=[4, 20, 22, 24, 30, 36, 44, 52, 60])
    assert leaking.rising() == ["open files rose from 70 to 200", "threads rose from 24 to 60"]
