"""Analytical cost of an int8 TFLite graph: what the identity tensor multiplier can save, before any run.

MobileNeXt (Zhou et al., "Rethinking Bottleneck Structure for Efficient Mobile Network Design",
https://arxiv.org/abs/2007.02269, section 3.3) adds only a fraction of the channels through the shortcut
(the identity tensor multiplier). The paper counts FLOPs; here we count what a microcontroller pays for:
memory traffic and the live activation memory. Everything is read from the ``.tflite`` flatbuffer
(schema: https://github.com/tensorflow/tensorflow/blob/master/tensorflow/compiler/mlir/lite/schema/schema.fbs)
with the ``tflite`` package; nothing is run.

Conventions (also recorded in every result under ``"conventions"``):

* activation = a non-constant tensor (graph inputs, op outputs). Weights and biases are constants
  (tensors with data in a buffer) and never count as activation bytes; ``weight_bytes`` counts them
  separately (int8 weights, int32 biases at their stored sizes).
* bytes moved by an op = bytes of its activation inputs read once + bytes of its outputs written once
  (element count x element size; int8 = 1 B). A lower bound: real kernels re-read inputs (im2col, tiling).
* shortcut add = an ADD whose two inputs are both activations (a residual connection); its traffic is
  both inputs read + the output written. Slices and concatenations that carve the added part out of a
  tensor (how a partial shortcut appears in a TFLite graph) are counted per op as ``data_movement``.
* peak live activation bytes = max over the execution order (operator order in the flatbuffer) of the
  sum of sizes of the activations alive at that step: a tensor lives from the op that writes it (graph
  inputs: from step 0) to the last op that reads it (graph outputs: to the end). A lower bound for any
  planner that keeps the order and does no in-place reuse; arena planners add alignment and scratch.
* MACs: CONV_2D = out elements x KH x KW x Cin; DEPTHWISE_CONV_2D = out elements x KH x KW;
  FULLY_CONNECTED = out elements x Cin (TFLite filter layouts [Cout,KH,KW,Cin], [1,KH,KW,Cout], [Cout,Cin]).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tflite

from harness.paths import repo_relative

# TFLite TensorType enum -> bytes per element (schema.fbs `enum TensorType`).
_DTYPE_BYTES = {
    tflite.TensorType.FLOAT32: 4, tflite.TensorType.FLOAT16: 2, tflite.TensorType.INT32: 4,
    tflite.TensorType.UINT8: 1, tflite.TensorType.INT64: 8, tflite.TensorType.BOOL: 1,
    tflite.TensorType.INT16: 2, tflite.TensorType.INT8: 1, tflite.TensorType.FLOAT64: 8,
}
# Ops that only copy part of a tensor around: how a partial shortcut shows up in a TFLite graph.
_DATA_MOVEMENT = {"SLICE", "STRIDED_SLICE", "CONCATENATION", "SPLIT", "SPLIT_V", "PAD", "PADV2"}

CONVENTIONS = {
    "activation_bytes": "non-constant tensors only; weights and int32 biases excluded (see weight_bytes)",
    "bytes_moved": "per op: activation inputs read once + outputs written once, int8 = 1 B/element",
    "shortcut_add": "ADD with two activation inputs; traffic = 2 inputs read + output written",
    "peak_live": "max over flatbuffer op order of the sum of live activations (no in-place reuse)",
    "macs": "CONV_2D out*KH*KW*Cin, DEPTHWISE_CONV_2D out*KH*KW, FULLY_CONNECTED out*Cin",
    "fused": "*_fused: each shortcut ADD fused with the slices/concatenations around it into one kernel "
             "that reads only the sliced parts of its inputs and writes only tensors used outside it",
}


@dataclass
class Layer:
    """One row of the per-layer table (like ST Edge AI's `analyze`)."""
    index: int
    op: str
    output_shape: list[int]
    macs: int
    params: int                 # weight + bias elements
    param_bytes: int            # their stored size (int8 weights, int32 biases)
    activation_bytes: int       # activation inputs read + outputs written
    shortcut_bytes: int         # the same, but only for shortcut adds (else 0)
    shortcut_elements: int      # elements added by a shortcut add (else 0)


def _op_name(model: tflite.Model, op: tflite.Operator) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    # Builtin codes >= 127 live in BuiltinCode(); DeprecatedBuiltinCode() holds the small ones.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == tflite.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + code.CustomCode().decode()
    return tflite.opcode2name(builtin)


def _union_find(n: int):
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    return find, union


def _peak_live(nodes: list[tuple[list[int], list[int]]], graph_inputs, graph_outputs, nbytes) -> tuple[int, int]:
    """(peak bytes, step) of live activations over ``nodes`` = [(activation inputs, outputs)] in order."""
    n = len(nodes)
    first = {int(t): 0 for t in graph_inputs}
    last: dict[int, int] = {}
    for i, (ins, outs) in enumerate(nodes):
        for t in outs:
            first.setdefault(t, i)
        for t in ins:
            last[t] = i
    for t in graph_outputs:
        last[int(t)] = n - 1
    live = np.zeros(max(n, 1), dtype=np.int64)
    for t, s in first.items():
        live[s:last.get(t, s) + 1] += nbytes(t)
    step = int(np.argmax(live))
    return int(live[step]), step


def analyze(model_path: str | Path) -> dict:
    """Analytical costs of the first subgraph of an int8 .tflite model.

    Returns a JSON-ready dict of totals, ``layers`` (per-op table) and ``conventions``. Two views:

    * as the graph is (op by op, every op reads its inputs and writes its outputs: LiteRT, TFLite Micro):
      ``bytes_moved``, ``shortcut_bytes`` (shortcut ADDs only), ``peak_live_bytes``;
    * ``*_fused``: each shortcut ADD fused with the slices/concatenations around it into one kernel (what a
      fusing compiler such as TVM can do): the kernel reads only the sliced parts of its inputs and writes
      only the tensors used outside it. ``shortcut_bytes_fused`` is the traffic of those kernels.
    """
    buf = Path(model_path).read_bytes()
    model = tflite.Model.GetRootAs(buf, 0)
    graph = model.Subgraphs(0)

    def is_const(t: int) -> bool:
        b = graph.Tensors(t).Buffer()
        return b > 0 and model.Buffers(b).DataLength() > 0

    def shape(t: int) -> list[int]:
        return [int(d) for d in graph.Tensors(t).ShapeAsNumpy()] if graph.Tensors(t).ShapeLength() else []

    def nbytes(t: int) -> int:
        return int(np.prod(shape(t), dtype=np.int64)) * _DTYPE_BYTES[graph.Tensors(t).Type()]

    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    names = [_op_name(model, op) for op in ops]
    ins = [[int(t) for t in op.InputsAsNumpy() if t >= 0] if op.InputsLength() else [] for op in ops]
    act_ins = [[t for t in i if not is_const(t)] for i in ins]
    outs = [[int(t) for t in op.OutputsAsNumpy()] for op in ops]
    graph_inputs = [int(t) for t in graph.InputsAsNumpy()]
    graph_outputs = [int(t) for t in graph.OutputsAsNumpy()]

    layers: list[Layer] = []
    for i in range(len(ops)):
        name = names[i]
        out_shape = shape(outs[i][0])
        out_elems = int(np.prod(out_shape, dtype=np.int64))
        macs = 0
        if name == "CONV_2D":
            _, kh, kw, cin = shape(ins[i][1])
            macs = out_elems * kh * kw * cin
        elif name == "DEPTHWISE_CONV_2D":
            _, kh, kw, _ = shape(ins[i][1])
            macs = out_elems * kh * kw
        elif name == "FULLY_CONNECTED":
            macs = out_elems * shape(ins[i][1])[-1]
        # Only weights/biases of compute ops count as parameters (not shape or slice-begin constants).
        consts = [t for t in ins[i] if is_const(t)] if macs else []
        params = sum(int(np.prod(shape(t), dtype=np.int64)) for t in consts)
        moved = sum(nbytes(t) for t in act_ins[i]) + sum(nbytes(t) for t in outs[i])
        shortcut = name == "ADD" and len(act_ins[i]) == 2
        layers.append(Layer(i, name, out_shape, macs, params, sum(nbytes(t) for t in consts), moved,
                            moved if shortcut else 0, out_elems if shortcut else 0))

    # Fused view: join shortcut ADDs and data-movement ops through tensors that only they produce and read.
    producer = {t: i for i, o in enumerate(outs) for t in o}
    consumers: dict[int, list[int]] = {}
    for i, a in enumerate(act_ins):
        for t in a:
            consumers.setdefault(t, []).append(i)
    fusible = [l.shortcut_bytes > 0 or l.op in _DATA_MOVEMENT for l in layers]
    find, union = _union_find(len(ops))
    for t, i in producer.items():
        users = consumers.get(t, [])
        if fusible[i] and users and t not in graph_outputs and all(fusible[u] for u in users):
            for u in users:
                union(i, u)
    groups: dict[int, list[int]] = {}
    for i in range(len(ops)):
        groups.setdefault(find(i), []).append(i)
    # Only groups around a shortcut ADD are fused; they run at the position of their last op.
    fused = [g for g in groups.values() if len(g) > 1 and any(layers[j].shortcut_bytes for j in g)]
    in_group = {j for g in fused for j in g}
    by_last = {max(g): g for g in fused}
    nodes, moved_fused, shortcut_fused = [], 0, 0
    for i in range(len(ops)):
        if i not in in_group:
            nodes.append((act_ins[i], outs[i]))
            moved_fused += layers[i].activation_bytes
            shortcut_fused += layers[i].shortcut_bytes
            continue
        if i not in by_last:
            continue
        g = by_last[i]
        members = set(g)
        reads = 0
        ext_in: list[int] = []
        for j in g:
            for t in act_ins[j]:
                if producer.get(t) in members:
                    continue
                ext_in.append(t)
                # A slice of an outside tensor reads only the slice.
                reads += nbytes(outs[j][0]) if names[j] in ("SLICE", "STRIDED_SLICE") else nbytes(t)
        ext_out = [t for j in g for t in outs[j]
                   if t in graph_outputs or any(u not in members for u in consumers.get(t, []))]
        traffic = reads + sum(nbytes(t) for t in ext_out)
        nodes.append((ext_in, ext_out))
        moved_fused += traffic
        shortcut_fused += traffic

    peak, peak_step = _peak_live([(a, o) for a, o in zip(act_ins, outs)], graph_inputs, graph_outputs, nbytes)
    peak_fused, _ = _peak_live(nodes, graph_inputs, graph_outputs, nbytes)
    return {
        "model": repo_relative(model_path),
        "ops": len(ops),
        "input_shape": shape(graph_inputs[0]),
        "params": sum(l.params for l in layers),
        "weight_bytes": sum(l.param_bytes for l in layers),
        "macs": sum(l.macs for l in layers),
        "shortcut_adds": sum(1 for l in layers if l.shortcut_bytes),
        "shortcut_elements": sum(l.shortcut_elements for l in layers),
        "shortcut_bytes": sum(l.shortcut_bytes for l in layers),
        "data_movement_bytes": sum(l.activation_bytes for l in layers if l.op in _DATA_MOVEMENT),
        "bytes_moved": sum(l.activation_bytes for l in layers),
        "peak_live_bytes": peak,
        "peak_live_step": peak_step,
        "shortcut_bytes_fused": shortcut_fused,
        "bytes_moved_fused": moved_fused,
        "peak_live_bytes_fused": peak_fused,
        "conventions": CONVENTIONS,
        "layers": [asdict(l) for l in layers],
    }


def layer_table(result: dict) -> str:
    """The per-layer table of `analyze` as GitHub markdown."""
    rows = ["| # | op | output shape | MACs | params (B) | activation B | shortcut B |",
            "|---:|---|---|---:|---:|---:|---:|"]
    for l in result["layers"]:
        shp = "x".join(str(d) for d in l["output_shape"])
        rows.append(f"| {l['index']} | {l['op']} | {shp} | {l['macs']:,} | {l['params']:,} ({l['param_bytes']:,}) "
                    f"| {l['activation_bytes']:,} | {l['shortcut_bytes'] or ''} |")
    rows.append(f"| | **total** | | **{result['macs']:,}** | **{result['params']:,}** "
                f"({result['weight_bytes']:,}) | **{result['bytes_moved']:,}** | **{result['shortcut_bytes']:,}** |")
    return "\n".join(rows)
