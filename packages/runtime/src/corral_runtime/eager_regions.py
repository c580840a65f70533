"""Which pages of a CRIU image a lazy restore copies up front: every page of a small memory region.

CRIU marks every page of private anonymous memory lazy (`PE_LAZY` in the image's pagemap): a lazy
restore leaves it empty and the worker's first touch of each page waits on the `criu lazy-pages`
daemon. That suits the big regions a snapshot exists for (a model's weights, a large array), which
the worker touches little right after a restore. But the path from the restore to the first result
(reading the identity, a new gRPC channel, `ContainerInit`, `Ready`, the first input) touches pages
all over the interpreter's and the libraries' own heap, in small regions, one fault at a time
(docs/architecture.md, "Memory snapshots"). After the dump, `make_small_regions_eager` clears
`PE_LAZY` on the pages of regions smaller than `EAGER_REGION_MAX_BYTES`, so CRIU restores those
eagerly and only the big regions stay lazy.

The image files are CRIU's: a two-word magic, then entries (a little-endian u32 length and a
protobuf message). `mm-N.img` holds one MmEntry whose field 14 lists the VMAs (VmaEntry: start 1,
end 2); `pagemap-N.img` holds a PagemapHead, then PagemapEntry messages (vaddr 1, nr_pages 2,
in_parent 3, flags 4). Only the flags of whole entries inside small regions change.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator
from pathlib import Path

# Regions below this are restored eagerly. Measured on the snapshot benchmark's image (1.2 GB, 767
# regions): of the ~1,700 pages a restored worker faulted in on its way to the first result, ~1,600
# were in regions of 0-5 MiB (pymalloc arenas are 1 MiB), ~15 in one of 8 MiB, 20-120 in the 22 MiB
# brk heap, none in the 262 MiB and 700 MiB regions of the state. 16 MiB makes 53 MB eager.
EAGER_REGION_MAX_BYTES = 16 << 20
PE_LAZY = 1 << 1  # CRIU's pagemap flag: the page may arrive through userfaultfd
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MAGIC_BYTES = 8
_MM_VMAS = 14
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class ImageFormatError(Exception):
    """An image file is not what CRIU writes (truncated, or an unknown wire type)."""


def make_small_regions_eager(image_dir: Path, max_bytes: int = EAGER_REGION_MAX_BYTES) -> int:
    """Clear the lazy flag of pages in memory regions smaller than `max_bytes`, for each process
    of the image in `image_dir`. Returns how many pages became eager. A pagemap entry that reaches
    into a big region stays lazy whole."""
    total = 0
    for pagemap in sorted(image_dir.glob("pagemap-*.img")):
        mm = image_dir / f"mm-{pagemap.name[len('pagemap-'):]}"
        if not mm.exists():
            continue
        total += _rewrite_pagemap(pagemap, _small_regions(mm, max_bytes))
    return total


def _small_regions(mm: Path, max_bytes: int) -> list[tuple[int, int]]:
    """The [start, end) of every VMA smaller than `max_bytes`, sorted by start."""
    _, entries = _read_entries(mm.read_bytes())
    if not entries:
        raise ImageFormatError(f"{mm.name} holds no MmEntry")
    regions = []
    for number, _, vma in _fields(entries[0]):
        if number == _MM_VMAS and isinstance(vma, bytes):
            values = {n: v for n, _, v in _fields(vma)}
            start, end = values.get(1), values.get(2)
            if isinstance(start, int) and isinstance(end, int) and 0 < end - start < max_bytes:
                regions.append((start, end))
    return sorted(regions)


def _rewrite_pagemap(pagemap: Path, regions: list[tuple[int, int]]) -> int:
    magic, entries = _read_entries(pagemap.read_bytes())
    starts = [start for start, _ in regions]
    changed = 0
    out = [magic]
    for index, entry in enumerate(entries):
        if index > 0:  # entry 0 is the PagemapHead
            fields = list(_fields(entry))
            values = {n: v for n, _, v in fields}
            vaddr, pages, flags = values.get(1), values.get(2), values.get(4, 0)
            if isinstance(vaddr, int) and isinstance(pages, int) and isinstance(flags, int) and flags & PE_LAZY:
                end = vaddr + pages * PAGE_SIZE
                at = bisect.bisect_right(starts, vaddr) - 1
                if at >= 0 and regions[at][0] <= vaddr and end <= regions[at][1]:
                    entry = _encode([(n, t, flags & ~PE_LAZY if n == 4 else v) for n, t, v in fields])
                    changed += pages
        out.append(struct.pack("<I", len(entry)) + entry)
    if changed:
        staging = pagemap.with_name(f".{pagemap.name}.eager")
        staging.write_bytes(b"".join(out))
        os.replace(staging, pagemap)
    return changed


def _read_entries(data: bytes) -> tuple[bytes, list[bytes]]:
    if len(data) < _MAGIC_BYTES:
        raise ImageFormatError("an image file shorter than its magic")
    entries, at = [], _MAGIC_BYTES
    while at < len(data):
        if at + 4 > len(data):
            raise ImageFormatError("a truncated entry length")
        (size,) = struct.unpack_from("<I", data, at)
        at += 4
        if at + size > len(data):
            raise ImageFormatError("a truncated entry")
        entries.append(data[at:at + size])
        at += size
    return data[:_MAGIC_BYTES], entries


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ImageFormatError("a truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(message: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field: an int for varints, bytes otherwise."""
    at = 0
    while at < len(message):
        key, at = _varint(message, at)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, at = _varint(message, at)
        elif wire == _BYTES:
            size, at = _varint(message, at)
            value, at = message[at:at + size], at + size
        elif wire in (_FIXED64, _FIXED32):
            width = 8 if wire == _FIXED64 else 4
            value, at = message[at:at + width], at + width
        else:
            raise ImageFormatError(f"unknown protobuf wire type {wire}")
        yield number, wire, value


def _encode(fields: list[tuple[int, int, int | bytes]]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += _encode_varint(number << 3 | wire)
        if wire == _VARINT:
            assert isinstance(value, int)
            out += _encode_varint(value)
        elif wire == _BYTES:
            assert isinstance(value, bytes)
            out += _encode_varint(len(value)) + value
        else:
            assert isinstance(value, bytes)
            out += value
    return bytes(out)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
