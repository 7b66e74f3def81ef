"""Compiler pipeline: .tflite -> integer Relax IRModule, target independent.

Phases (each a ``tvm.transform.Sequential`` of pure IRModule -> IRModule passes):

1. front end (``compile.frontend``): read + check the file, ``from_tflite``;
2. ``integer``: ``compile.lower.integer_pipeline()`` turns the importer's
   dequantize -> float op -> quantize chains into integer arithmetic (bit-exact with
   TFLite's reference kernels);
3. ``cleanup``: generic Relax cleanups.

Backends then legalize/schedule/compile the result for their target (``compile.backends``).
"""
from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax

from compile.frontend import ModelInfo, import_model, read_model


def has_integer_lowering() -> bool:
    """True once ``compile.lower.integer_pipeline`` exists (else the float path is compiled)."""
    try:
        from compile.lower import integer_pipeline  # noqa: F401
    except ImportError as err:   # no compile/lower yet, or no integer_pipeline in it yet
        if err.name != "compile.lower":
            raise
        return False
    return True


def integer_phase() -> tvm.transform.Pass:
    """``compile.lower.integer_pipeline()``; an empty Sequential while it does not exist."""
    if not has_integer_lowering():
        return tvm.transform.Sequential([], name="integer")
    from compile.lower import integer_pipeline

    return integer_pipeline()


def op_converter():
    """The importer's operator converter: compile.lower's (int8 data movement allowed) if any."""
    if not has_integer_lowering():
        return None
    from compile.lower.importer import IntegerOperatorConverter

    return IntegerOperatorConverter


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
    mod = import_model(model, info, op_converter())
    seq = tvm.transform.Sequential([integer_phase(), cleanup_phase()], name="sandglass")
    with tvm.transform.PassContext(opt_level=3):
        mod = seq(mod)
    return mod, info
