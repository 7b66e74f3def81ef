"""Compiler pipeline: .tflite -> integer Relax IRModule, target independent.

Phases (each a ``tvm.transform.Sequential`` of pure IRModule -> IRModule passes):

1. front end (``compile.frontend``): read + check the file, ``from_tflite``;
2. ``compile.lower.integer_pipeline()`` turns the importer's dequantize -> float op ->
   quantize chains into integer arithmetic (bit-exact with TFLite's reference kernels);
3. ``cleanup``: generic Relax cleanups.

Backends then legalize/schedule/compile the result for their target (``compile.backends``).
"""
from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax

from compile.errors import ModelError
from compile.frontend import ModelInfo, import_model, read_model, refusing_quietly
from compile.lower import integer_pipeline
from compile.lower.importer import IntegerOperatorConverter


def cleanup_phase() -> tvm.transform.Pass:
    """Target-independent cleanups after lowering."""
    return tvm.transform.Sequential(
        [
            relax.transform.CanonicalizeBindings(),
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(["main"]),
        ],
        name="cleanup",
    )


def compile_model(path: str | Path) -> tuple[tvm.IRModule, ModelInfo]:
    """Front end checks -> from_tflite -> integer lowering -> cleanups."""
    model, info = read_model(path)
    # compile.lower's converter also imports int8 data-movement ops (PAD, STRIDED_SLICE, ...)
    mod = import_model(model, info, IntegerOperatorConverter)
    seq = tvm.transform.Sequential([integer_pipeline(), cleanup_phase()], name="sandglass")

    def lowered():
        with tvm.transform.PassContext(opt_level=3):
            return seq(mod)

    # ModelError: a lowering that cannot compile this model exactly
    mod = refusing_quietly(lowered, ModelError, lambda err: f"{info.path}: {err}")
    return mod, info


def float_ops(mod: tvm.IRModule) -> dict[str, int]:
    """Relax operators in ``main`` that compute a floating-point result, with their counts.

    Empty for an int8-in/int8-out model after integer lowering; a float-output model
    keeps the dequantize of its output.
    """
    counts: dict[str, int] = {}

    def visit(expr):
        if (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)
                and isinstance(expr.ty, relax.TensorType)
                and str(expr.ty.dtype).startswith("float")):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return counts
