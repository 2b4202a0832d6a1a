#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed inputs of tests/fuzz/corpus/ (run from the source tree's
top: python3 tests/fuzz/make_seeds.py). The plan seeds follow the input
format of fuzz_plan.c; the .npy seeds are small valid files of each format
version and a few of each kind of malformed one. Inputs that ever crashed a
target are added to the corpus by hand, under a name saying what they hit."""
import os
import struct

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def small(v):
    return bytes([0, v])


def pow2(shift, offset=0):
    return bytes([1, shift, offset & 0xFF])


def raw(v):
    return bytes([2]) + struct.pack("<q", v)


def neg(v):
    return bytes([3, v])


def size(v):
    if 0 <= v < 256:
        return small(v)
    if v > 0 and (v & (v - 1)) == 0:
        return pow2(v.bit_length() - 1)
    return raw(v)


def plan(dims=None, fields=b"", fbits=0, more=b"", mbits=0, tensors=b""):
    """dims: dict index -> value for (B, Hq, Hkv, Nq, Nk, D)."""
    dims = dims or {}
    shape = 0
    body = b""
    for i in range(6):
        if i in dims:
            shape |= 1 << i
            body += size(dims[i])
    return bytes([shape, fbits, mbits]) + body + fields + more + tensors


def write(sub, name, data):
    d = os.path.join(TOP, sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


CONTIG = b"\x00"
calls = CONTIG * 5 + b"\x00" + small(0) + b"\x00"  # q k v out h, no h, sel
write("plan", "default", b"")
write("plan", "gqa-topk-per-head",
      plan({1: 8, 2: 2, 3: 100, 4: 300, 5: 16},
           fields=size(32) + bytes([1]) + small(3) + bytes([0]), fbits=4 | 64 | 128,
           tensors=b"\x01" * 5 + b"\x01" + small(16) + b"\x01"))
write("plan", "decode-contiguous",
      plan({3: 1, 4: 256}, fields=size(16), fbits=4,
           tensors=calls + b"\x00" + CONTIG * 3 + small(0)))
write("plan", "decode-paged-huge-table-stride",
      plan({0: 2, 3: 1, 4: 256}, fields=size(16), fbits=4,
           tensors=calls + b"\x01" + small(4) + CONTIG * 3 + raw(1 << 62)))
write("plan", "halley-flat-prior",
      plan({3: 128, 4: 128}, more=bytes([1]) + bytes([7]) + bytes([1]) + small(3), mbits=4 | 8,
           tensors=calls))
write("plan", "noncausal-sparsemax-bf16",
      plan({3: 200, 4: 64}, fields=bytes([2]) + bytes([0]) + bytes([3]), fbits=1 | 2 | 32,
           tensors=calls))
# The problems whose workspace wrapped, and one of 2^64 bytes with
# addressable tensors.
write("plan", "issue-workspace-12mb",
      plan({0: 1 << 20, 1: 1 << 16, 2: 1 << 16, 3: 1, 4: 536862720, 5: 1},
           fields=raw(197376), fbits=4, tensors=calls))
write("plan", "issue-2e15",
      plan({0: 1 << 20, 1: 1 << 16, 2: 1 << 16, 3: 1 << 31, 4: 1 << 31, 5: 256}))
write("plan", "workspace-2-64",
      plan({0: 1 << 20, 1: 1 << 16, 2: 1 << 16, 3: 1, 4: 1 << 21, 5: 1},
           fields=size(1), fbits=4, tensors=calls))
write("plan", "strides-2-48",
      plan({0: 1 << 16, 1: 1, 2: 1, 3: 1 << 16, 4: 1 << 16, 5: 255},
           tensors=b"\x02" + b"\x03" + pow2(48) * 4 + b"\x02" * 3 + b"\x00" + small(0)))


def npy(header_dict, data, major=1):
    text = header_dict.encode("latin1")
    pre = 6 + 2 + (2 if major == 1 else 4)
    pad = (64 - (pre + len(text) + 1) % 64) % 64
    text += b" " * pad + b"\n"
    length = struct.pack("<H", len(text)) if major == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([major, 0]) + length + text + data


floats = struct.pack("<6f", 0.5, -1.0, 2.0, 0.0, 3.25, -0.125)
good = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }"
write("npy", "v1-4d", npy(good, floats))
write("npy", "v2-4d", npy(good, floats, major=2))
write("npy", "v3-4d", npy(good, floats, major=3))
write("npy", "0d", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", floats[:4]))
write("npy", "1d-tuple", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", floats))
write("npy", "empty-dim", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", b""))
write("npy", "key-order-long", npy("{'shape': (2L, 3L), 'fortran_order': False, 'descr': '<f4'}",
                                    floats))
write("npy", "fortran", npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", floats))
write("npy", "big-endian", npy("{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", floats))
write("npy", "f8", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", floats))
write("npy", "truncated", npy(good, floats)[:-5])
write("npy", "trailing", npy(good, floats) + b"\x00")
write("npy", "huge-shape",
      npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }", b""))
write("npy", "header-past-end", b"\x93NUMPY\x01\x00\xff\xff{'descr'")
write("npy", "bad-magic", b"\x93NUMPZ\x01\x00\x10\x00{}")
