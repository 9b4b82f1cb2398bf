"""Page-aligned buffers for O_DIRECT block writes."""

from __future__ import annotations

import gc

from mountfs.buffers import ALIGN, aligned, is_aligned


def test_aligned_buffers_are_writable_page_aligned_and_of_the_size_asked() -> None:
    for size in (1, ALIGN - 1, ALIGN, 4 << 20, 4 << 20 | 17):
        view = aligned(size)
        assert len(view) == size and not view.readonly and view.format == "B"
        assert is_aligned(view)
        view[:] = bytes(size)
        view[-1] = 7
        assert bytes(view[-1:]) == b"\x07"
    assert len(aligned(0)) == 0


def test_a_slice_keeps_its_buffer_alive() -> None:
    view = aligned(3 * ALIGN)
    view[ALIGN:ALIGN + 5] = b"hello"
    part = view[ALIGN:ALIGN + 5]
    del view
    gc.collect()
    for _ in range(50):  # reuse of freed memory would show up here
        aligned(3 * ALIGN)[:] = b"\xff" * (3 * ALIGN)
    assert bytes(part) == b"hello"


def test_only_writable_buffers_starting_on_a_page_say_they_are_aligned() -> None:
    view = aligned(2 * ALIGN)
    assert not is_aligned(view[1:]) and not is_aligned(view.toreadonly())
    assert not is_aligned(b"x" * ALIGN) and not is_aligned(view[:0])
