"""Small memory regions of a CRIU image restored eagerly: the pagemap rewrite (eager_regions.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from corral_runtime.eager_regions import (
    PAGE_SIZE,
    PE_LAZY,
    ImageFormatError,
    _encode,
    _fields,
    _read_entries,
    make_small_regions_eager,
)

PE_PRESENT = 1 << 2
MAGIC = struct.pack("<II", 0x54564319, 0x56084025)
MIB = 1 << 20


def image_file(entries: list[bytes]) -> bytes:
    return MAGIC + b"".join(struct.pack("<I", len(e)) + e for e in entries)


def write_image(directory: Path, vmas: list[tuple[int, int]], pagemap: list[tuple[int, int, int]], pid: int = 1) -> None:
    """mm-PID.img with `vmas` [(start, end)] and pagemap-PID.img with [(vaddr, nr_pages, flags)]."""
    mm = _encode([(1, 0, 0x1000), *[(14, 2, _encode([(1, 0, s), (2, 0, e), (3, 0, 0), (7, 0, 513)])) for s, e in vmas]])
    (directory / f"mm-{pid}.img").write_bytes(image_file([mm]))
    head = _encode([(1, 0, 1)])
    entries = [_encode([(1, 0, v), (2, 0, n), (4, 0, f)]) for v, n, f in pagemap]
    (directory / f"pagemap-{pid}.img").write_bytes(image_file([head, *entries]))


def flags_of(path: Path) -> list[int]:
    _, entries = _read_entries(path.read_bytes())
    return [dict((n, v) for n, _, v in _fields(e)).get(4, 0) for e in entries[1:]]  # type: ignore[misc]


LAZY = PE_LAZY | PE_PRESENT
SMALL = (0x10000000, 0x10000000 + MIB)  # a 1 MiB region (an arena)
BIG = (0x20000000, 0x20000000 + 256 * MIB)  # a 256 MiB region (the state)


def test_small_regions_become_eager_and_big_ones_stay_lazy(tmp_path: Path) -> None:
    write_image(tmp_path, [SMALL, BIG], [
        (SMALL[0], 16, LAZY), (SMALL[0] + 32 * PAGE_SIZE, 4, PE_PRESENT),
        (BIG[0], 256, LAZY), (BIG[0] + MIB, 256, LAZY),
    ])
    assert make_small_regions_eager(tmp_path) == 16
    assert flags_of(tmp_path / "pagemap-1.img") == [PE_PRESENT, PE_PRESENT, LAZY, LAZY]
    assert make_small_regions_eager(tmp_path) == 0  # idempotent: nothing left to change


def test_an_entry_reaching_into_a_big_region_stays_lazy(tmp_path: Path) -> None:
    adjacent_big = (SMALL[1], SMALL[1] + 256 * MIB)
    write_image(tmp_path, [SMALL, adjacent_big], [(SMALL[1] - 4 * PAGE_SIZE, 8, LAZY)])
    assert make_small_regions_eager(tmp_path) == 0
    assert flags_of(tmp_path / "pagemap-1.img") == [LAZY]


def test_the_threshold_and_every_process_of_the_tree(tmp_path: Path) -> None:
    for pid in (1, 7):
        write_image(tmp_path, [SMALL, BIG], [(SMALL[0], 2, LAZY), (BIG[0], 2, LAZY)], pid=pid)
    assert make_small_regions_eager(tmp_path, max_bytes=512 * MIB) == 8
    assert flags_of(tmp_path / "pagemap-7.img") == [PE_PRESENT, PE_PRESENT]


def test_an_unchanged_pagemap_is_left_byte_for_byte(tmp_path: Path) -> None:
    write_image(tmp_path, [BIG], [(BIG[0], 2, LAZY)])
    before = (tmp_path / "pagemap-1.img").read_bytes()
    assert make_small_regions_eager(tmp_path) == 0
    assert (tmp_path / "pagemap-1.img").read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated entry", "truncated varint", "short magic"])
def test_a_damaged_image_is_a_clear_error_and_left_as_it_was(tmp_path: Path, damage: str) -> None:
    write_image(tmp_path, [SMALL], [(SMALL[0], 2, LAZY)])
    pagemap = tmp_path / "pagemap-1.img"
    data = pagemap.read_bytes()
    if damage == "truncated entry":
        data = data[:-3]
    elif damage == "truncated varint":
        data = data[:-1] + b"\x80"
    else:
        data = data[:5]
    pagemap.write_bytes(data)
    with pytest.raises(ImageFormatError):
        make_small_regions_eager(tmp_path)
    assert pagemap.read_bytes() == data


def test_no_memory_map_no_change(tmp_path: Path) -> None:
    write_image(tmp_path, [SMALL], [(SMALL[0], 2, LAZY)])
    (tmp_path / "mm-1.img").unlink()
    assert make_small_regions_eager(tmp_path) == 0
