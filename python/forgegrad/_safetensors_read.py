"""A bounded safetensors reader for ``forgegrad.load`` / ``load_metadata``.

The file is opened without blocking and refused unless it is a regular file (a FIFO would block
forever, ``/dev/zero`` never ends). Then only the 8-byte header length and the header are read and
the header is validated completely (dtypes, shapes, offsets that tile the data section exactly and
match the file size) before any tensor memory is allocated; the tensors are then read straight into
preallocated numpy arrays, so the peak is the file's size plus the header, the returned arrays are
writable and own their memory, and no file stays open.
"""
from __future__ import annotations

import json
import os
import stat
from math import prod
from typing import BinaryIO, Dict, List, Tuple

import numpy as np

__all__ = ["CorruptFile", "open_regular", "read_header", "read_tensors"]

# safetensors' own limit on the JSON header (safetensors/src/tensor.rs, MAX_HEADER_SIZE)
MAX_HEADER_SIZE = 100_000_000

# the safetensors dtypes numpy can hold (the F8 types have no numpy dtype)
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "C64": "<c8"}
# bfloat16 (the dtype of most shared large-model checkpoints) has no numpy dtype either: its raw
# 16-bit words are read as uint16 tagged by this dtype's metadata, then widened to float32 exactly
# (a bfloat16 is the top half of a float32).
BF16 = np.dtype("<u2", metadata={"safetensors": "BF16"})


class CorruptFile(ValueError):
    """The bytes are not a valid safetensors file; the message says what is wrong."""


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def open_regular(path: str, who: str) -> Tuple[BinaryIO, int]:
    """(unbuffered binary file, size) for a regular file; clear errors for anything else."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{who}: {path!r} is a directory, not a checkpoint file")
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{who}: no such file: {path!r}") from None
    try:
        st = os.fstat(fd)  # of what was opened, not of what the path names now
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{who}: {path!r} is a directory, not a checkpoint file")
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
            raise ValueError(f"{who}: {path!r} is {kind}, not a regular file; checkpoints are read from "
                             "regular files only")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise CorruptFile(f"file ended early (wanted {n} bytes, got {len(data or b'')})")
    return data


def _nonneg_ints(value, what: str, length=None) -> List[int]:
    if (not isinstance(value, list) or (length is not None and len(value) != length)
            or not all(type(v) is int and v >= 0 for v in value)):
        raise CorruptFile(f"{what} must be a list of {length or 'any number of'} non-negative integers, got {value!r}")
    return value


def read_header(f: BinaryIO, size: int):
    """(metadata dict, [(name, numpy dtype, shape, begin, end)] in file order), leaving ``f`` at the
    start of the data, after checking that every tensor is well formed and that together they tile
    the data section exactly (so no allocation below can exceed the file's size)."""
    if size < 8:
        raise CorruptFile(f"the file is {size} bytes, too short for the 8-byte header length")
    n = int.from_bytes(_read_exact(f, 8), "little")
    if n > size - 8 or n > MAX_HEADER_SIZE:
        raise CorruptFile(f"header length {n} exceeds the file ({size} bytes) or the {MAX_HEADER_SIZE}-byte limit")
    try:
        header = json.loads(_read_exact(f, n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CorruptFile(f"the header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise CorruptFile(f"the header must be a JSON object, got {type(header).__name__}")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CorruptFile("__metadata__ must be an object of str -> str")
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise CorruptFile(f"tensor {name!r}: expected an object with dtype, shape and data_offsets")
        if info["dtype"] not in DTYPES and info["dtype"] != "BF16":
            raise CorruptFile(f"tensor {name!r}: dtype {info['dtype']!r} is not supported (supported: "
                              f"{', '.join(DTYPES)}, BF16)")
        dtype = BF16 if info["dtype"] == "BF16" else np.dtype(DTYPES[info["dtype"]])
        shape = _nonneg_ints(info["shape"], f"tensor {name!r}: shape")
        begin, end = _nonneg_ints(info["data_offsets"], f"tensor {name!r}: data_offsets", 2)
        if end - begin != prod(shape) * dtype.itemsize:
            raise CorruptFile(f"tensor {name!r}: data_offsets [{begin}, {end}] do not hold shape {shape} of "
                              f"{info['dtype']}")
        entries.append((name, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    pos = 0
    for name, _, _, begin, end in entries:
        if begin != pos:
            raise CorruptFile(f"tensor {name!r} starts at byte {begin} of the data, expected {pos} "
                              "(tensors must be contiguous and must not overlap)")
        pos = end
    if pos != size - 8 - n:
        raise CorruptFile(f"the tensors cover {pos} bytes but the file holds {size - 8 - n} after the header")
    return meta, entries


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) widened to float32: exact (the upper half of a float32)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def bfloat16_available() -> bool:
    """Whether forgegrad.bfloat16 can be made (the optional ml_dtypes package is installed)."""
    from . import dtypes
    try:
        dtypes.load_bfloat16()
    except ImportError:
        return False
    return True


def bfloat16_bits_as_bfloat16(arr: np.ndarray) -> np.ndarray:
    """An array read with ``widen_bfloat16=False``: its BF16 bit patterns as a bfloat16 array (a view; no
    rounding), any other array as it is. Needs ml_dtypes (bfloat16_available())."""
    if arr.dtype.metadata and arr.dtype.metadata.get("safetensors") == "BF16":
        from . import dtypes
        return arr.view(np.uint16).view(dtypes.load_bfloat16().dtype)
    return arr


def read_tensors(f: BinaryIO, entries, widen_bfloat16: bool = True) -> Dict[str, np.ndarray]:
    """Read each tensor (in file order, right after the header) into its own new array; bfloat16 tensors
    widened to float32, or with ``widen_bfloat16=False`` kept as their uint16 bit patterns (dtype ``BF16``)."""
    out = {}
    for name, dtype, shape, begin, end in entries:
        arr = np.empty(shape, dtype)
        if end > begin:
            buf = memoryview(arr.reshape(-1)).cast("B")
            got = 0
            while got < len(buf):
                k = f.readinto(buf[got:])
                if not k:
                    raise CorruptFile(f"file ended early while reading tensor {name!r}")
                got += k
        if dtype.kind == "b":  # any nonzero byte is True; numpy must only ever see 0 or 1
            np.not_equal(arr.view(np.uint8), 0, out=arr)
        if widen_bfloat16 and dtype.metadata and dtype.metadata.get("safetensors") == "BF16":
            arr = bfloat16_to_float32(arr)
        out[name] = arr
    return out
