"""Questions the schedules ask about a TIR statement, answered from its structure (a walk over
its nodes), never from its printed text: which intrinsics and operators it calls, how big it
is, how often it reads a buffer, which constants it divides by or compares a variable with.
"""
from __future__ import annotations

import functools

import tvm_ffi
from tvm.ir import expr as ir_expr
from tvm.ir.prim import expr as prim
from tvm.target import codegen

IF_THEN_ELSE = "prim.if_then_else"
_LLVM_INTRINSIC_CALLS = ("tirx.call_llvm_pure_intrin", "tirx.call_llvm_intrin")


def _collect(node, kinds, keep=lambda n: True) -> list:
    found = []

    def visit(n):
        if keep(n):
            found.append(n)

    tvm_ffi.structural_walk(node, [(kinds, visit)])
    return found


@functools.lru_cache(maxsize=None)
def _intrinsic_id(name: str) -> int:
    return int(codegen.llvm_lookup_intrinsic_id(name))


def calls_llvm_intrinsic(node, name: str) -> bool:
    """Does ``node`` call the LLVM intrinsic ``name`` (``T.call_llvm_pure_intrin``)?"""
    wanted = _intrinsic_id(name)
    return bool(_collect(node, ir_expr.Call, lambda c: (
        c.op.name in _LLVM_INTRINSIC_CALLS and len(c.args) > 0
        and isinstance(c.args[0], prim.IntImm) and int(c.args[0].value) == wanted)))


def calls_op(node, op_name: str) -> bool:
    """Does ``node`` call the operator ``op_name`` (e.g. ``IF_THEN_ELSE``)?"""
    return bool(_collect(node, ir_expr.Call, lambda c: getattr(c.op, "name", None) == op_name))


def block_names(node) -> list[str]:
    """The names of the blocks in ``node``."""
    from tvm.s_tir.stmt import SBlock

    return [str(b.name_hint) for b in _collect(node, SBlock)]


def multiplies(node) -> bool:
    return bool(_collect(node, prim.Mul))


def expression_size(node) -> int:
    """How many expression nodes ``node`` holds (operators, calls, loads, variables,
    constants): the size of the code it compiles to."""
    return len(_collect(node, ir_expr.Expr))


def loads_of(node, buffer_name: str) -> int:
    """How many places in ``node`` read the buffer named ``buffer_name``."""
    return len(_collect(node, ir_expr.TensorLoad,
                        lambda load: str(load.source.name) == buffer_name))


def divisors(node) -> list[int]:
    """The constants ``node`` divides by or takes a remainder of (``x // d``, ``x % d``)."""
    return [int(n.b.value) for n in _collect(node, (prim.FloorDiv, prim.FloorMod))
            if isinstance(n.b, prim.IntImm)]


def bounds_of(node, var_name: str) -> list[int]:
    """The constants ``d`` that ``node`` compares the variable ``var_name`` with as
    ``d <= var`` or ``var < d``."""
    def is_var(e):
        return isinstance(e, prim.Var) and str(e.name) == var_name

    found = [int(n.a.value) for n in _collect(node, prim.LE)
             if isinstance(n.a, prim.IntImm) and is_var(n.b)]
    return found + [int(n.b.value) for n in _collect(node, prim.LT)
                    if is_var(n.a) and isinstance(n.b, prim.IntImm)]
