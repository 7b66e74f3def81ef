"""Seeded mutations of a ``.tflite`` file: the same (file, seed) always gives the same mutant.

A TFLite file is a FlatBuffer: tables of offsets and scalars (the model's structure) and the
``Buffer`` data vectors (weights, biases).  ``layout`` finds both, and the position of every
scalar field the compiler reads (shapes, types, quantization, operator inputs, options), so a
mutator can aim at one of them:

========== ==================================================================================
kind       what changes
========== ==================================================================================
truncate   the file is cut anywhere
flip-table one to four bits flipped in the structure (vtables, offsets, scalars)
flip-data  one to four bits flipped in the weights (the mutant is usually a valid model)
zero-run   a run of 1-64 bytes set to zero
offset     a 32-bit word of the structure overwritten (an offset or count pointing elsewhere)
random     a run of 1-64 random bytes
field      one field the compiler reads set to an edge value: a NaN/0/negative/denormal scale,
           a zero point outside its type, a zero/negative/huge dimension, a quantized
           dimension past the rank, an operator input naming another or no tensor, an
           options field (stride, padding, activation, ...) out of its range
========== ==================================================================================
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import tflite

KINDS = ("truncate", "flip-table", "flip-data", "zero-run", "offset", "random", "field")

# (struct format, edge values) per scalar kind: what a corrupt or hostile file might hold
EDGES = {
    "f32": ("<f", [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.0, 1e-45, 1e-38,
                   3e38, -0.5]),
    "i64": ("<q", [128, -129, 255, 256, -(2**63), 2**63 - 1, 2**40, -1]),
    "i32": ("<i", [0, -1, -2, 1, 2, 3, 4, 7, 255, 65536, 2**31 - 1, -(2**31)]),
    "i8": ("<b", [0, -1, 1, 2, 3, 4, 9, 17, 100, 127, -128]),
    "u8": ("<B", [0, 1, 2, 3, 4, 5, 6, 127, 200, 255]),
    "u32": ("<I", [0, 1, 2, 3, 8, 1000, 2**31, 2**32 - 1]),
}


@dataclass
class Layout:
    """Where things are in one ``.tflite`` (absolute byte positions)."""
    size: int
    data: list[tuple[int, int]] = field(default_factory=list)         # buffer data (start, len)
    fields: list[tuple[int, str, str]] = field(default_factory=list)  # (pos, scalar kind, name)

    def structure_bytes(self) -> list[tuple[int, int]]:
        """(start, end) ranges that are not buffer data: the tables, vtables and offsets."""
        ranges, at = [], 0
        for start, length in sorted(self.data):
            if start > at:
                ranges.append((at, start))
            at = max(at, start + length)
        if at < self.size:
            ranges.append((at, self.size))
        return ranges


def _scalar(tab, slot: int):
    """Absolute position of a scalar field present in the table, else None."""
    o = tab.Offset(slot)
    return tab.Pos + o if o else None


def _vector(tab, slot: int):
    """(start, length) of a vector field present in the table, else None."""
    o = tab.Offset(slot)
    return (tab.Vector(o), tab.VectorLen(o)) if o else None


def _options_fields(tab, name: str, out: list) -> None:
    """Every scalar slot of an options table (its vtable lists them); sized by the gap to the
    next field, so one- and four-byte fields are both found."""
    vtable = tab.Pos - struct.unpack_from("<i", tab.Bytes, tab.Pos)[0]
    vlen, tlen = struct.unpack_from("<HH", tab.Bytes, vtable)
    offsets = sorted({struct.unpack_from("<H", tab.Bytes, vtable + 4 + 2 * i)[0]
                      for i in range((vlen - 4) // 2)} - {0})
    for i, off in enumerate(offsets):
        width = (offsets[i + 1] if i + 1 < len(offsets) else tlen) - off
        kind = "i32" if width >= 4 else "i8"
        out.append((tab.Pos + off, kind, f"{name} field at +{off}"))


def layout(buf: bytes) -> Layout:
    """Buffer data ranges and field positions of a readable ``.tflite``."""
    model = tflite.Model.GetRootAsModel(buf, 0)
    lay = Layout(len(buf))
    for b in range(model.BuffersLength()):
        v = _vector(model.Buffers(b)._tab, 4)
        if v and v[1]:
            lay.data.append(v)
    f = lay.fields
    for i in range(model.OperatorCodesLength()):
        tab = model.OperatorCodes(i)._tab
        for slot, kind, what in ((4, "i8", "deprecated builtin code"), (8, "i32", "version"),
                                 (10, "i32", "builtin code")):
            if (pos := _scalar(tab, slot)) is not None:
                f.append((pos, kind, f"operator code {i} {what}"))
    sg = model.Subgraphs(0)
    for t in range(sg.TensorsLength()):
        tensor = sg.Tensors(t)
        tab = tensor._tab
        if (v := _vector(tab, 4)) is not None:
            f += [(v[0] + 4 * k, "i32", f"tensor {t} shape[{k}]") for k in range(v[1])]
        for slot, kind, what in ((6, "u8", "type"), (8, "u32", "buffer")):
            if (pos := _scalar(tab, slot)) is not None:
                f.append((pos, kind, f"tensor {t} {what}"))
        q = tensor.Quantization()
        if q is None:
            continue
        qtab = q._tab
        if (v := _vector(qtab, 8)) is not None:
            f += [(v[0] + 4 * k, "f32", f"tensor {t} scale[{k}]") for k in range(v[1])]
        if (v := _vector(qtab, 10)) is not None:
            f += [(v[0] + 8 * k, "i64", f"tensor {t} zero_point[{k}]") for k in range(v[1])]
        if (pos := _scalar(qtab, 16)) is not None:
            f.append((pos, "i32", f"tensor {t} quantized_dimension"))
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        tab = op._tab
        if (pos := _scalar(tab, 4)) is not None:
            f.append((pos, "u32", f"operator {o} opcode index"))
        for slot, what in ((6, "input"), (8, "output")):
            if (v := _vector(tab, slot)) is not None:
                f += [(v[0] + 4 * k, "i32", f"operator {o} {what}[{k}]") for k in range(v[1])]
        if (pos := _scalar(tab, 10)) is not None:
            f.append((pos, "u8", f"operator {o} options type"))
        options = op.BuiltinOptions()
        if options is not None:
            _options_fields(options, f"operator {o} options", f)
    for slot, what in ((6, "input"), (8, "output")):
        if (v := _vector(sg._tab, slot)) is not None:
            f += [(v[0] + 4 * k, "i32", f"subgraph {what}[{k}]") for k in range(v[1])]
    return lay


def _pick_range(rng: random.Random, ranges: list[tuple[int, int]]) -> int:
    """A byte position uniformly over the union of ``ranges``."""
    total = sum(end - start for start, end in ranges)
    at = rng.randrange(total)
    for start, end in ranges:
        if at < end - start:
            return start + at
        at -= end - start
    raise AssertionError("unreachable")


def mutate(buf: bytes, lay: Layout, seed: int, kind: str | None = None) -> tuple[bytes, str, str]:
    """(mutant bytes, kind, what was done) for ``seed``; ``kind`` None draws one of KINDS."""
    rng = random.Random(seed)
    kind = kind or rng.choice(KINDS)
    out = bytearray(buf)
    structure = lay.structure_bytes()
    data = [(s, s + n) for s, n in lay.data] or structure
    if kind == "truncate":
        cut = rng.randrange(len(buf))
        return bytes(out[:cut]), kind, f"cut to {cut} of {len(buf)} bytes"
    if kind in ("flip-table", "flip-data"):
        bits = []
        for _ in range(rng.randint(1, 4)):
            pos = _pick_range(rng, structure if kind == "flip-table" else data)
            bit = rng.randrange(8)
            out[pos] ^= 1 << bit
            bits.append(f"{pos}.{bit}")
        return bytes(out), kind, f"bits flipped at {', '.join(bits)}"
    if kind in ("zero-run", "random"):
        pos = rng.randrange(len(buf))
        n = min(rng.randint(1, 64), len(buf) - pos)
        out[pos:pos + n] = bytes(n) if kind == "zero-run" else rng.randbytes(n)
        return bytes(out), kind, f"{n} bytes at {pos}"
    if kind == "offset":
        words = [p for s, e in structure for p in range((s + 3) // 4 * 4, e - 3, 4)]
        pos = rng.choice(words)
        value = rng.choice([0, 1, 4, 0xFFFFFFFF, 0x7FFFFFFF, len(buf), len(buf) - 4,
                            rng.randrange(len(buf)), rng.randrange(2**32)])
        struct.pack_into("<I", out, pos, value)
        return bytes(out), kind, f"word at {pos} set to {value}"
    if kind == "field":
        pos, scalar, name = rng.choice(lay.fields)
        fmt, edges = EDGES[scalar]
        value = rng.choice(edges)
        struct.pack_into(fmt, out, pos, value)
        return bytes(out), kind, f"{name} set to {value!r}"
    raise ValueError(f"unknown mutation kind {kind}")
