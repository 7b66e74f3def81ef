"""Relax ``main`` -> static step list + lowered TIR kernels (the AOT part of microTVM, redone).

1. Relax: ``OffloadConvolutions`` (``nnlib``: each quantized convolution, requantization
   included, becomes one call of a kernel of ``firmware/sg_nn.h``; its PrimFunc is the same
   computation in TE, for the memory plan and the MAC count) -> ``ReduceLastWeights``
   (weights of the convolutions left to TVM, OHWI) -> ``LegalizeOps`` ->
   ``AnnotateTIROpPattern`` -> ``FoldConstant`` -> ``FuseOps`` -> ``FoldPadIntoConsumer``
   (``padfuse``) -> ``FuseTIR`` -> ``DeadCodeElimination``: ``main`` becomes a straight
   line of ``call_tir``.
2. Each fused PrimFunc is scheduled so that it needs no big temporaries: every
   element-wise producer is inlined into its consumer (``compute_inline``) and the
   epilogue is computed right after each output element of the reduction that feeds it
   (``reverse_compute_at``), so a convolution's int32 accumulator compacts to one element.
   The kernels left to TVM (convolutions ``nnlib`` does not take: left-shift multipliers,
   dilation, channel multipliers) use the core: ``tile_channels`` computes 4 channels of a depthwise
   convolution together (register accumulators) and 2 pixels x 2 output channels of a 1x1
   one, whose int8 dot products ``intrin.tensorize_dots`` hands to SMLAD / Helium C helpers.
3. The s_tir lowering passes (without ``MakePackedAPI``) flatten buffers; ``cemit`` prints
   the result, with int64 constants that fit int32 stored narrowed (``narrow_constants``).

Result: a ``Graph`` of tensors (input, output, constants, activations) and steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx

from compile.backends.cortexm.cemit import KernelC, UnsupportedTIR, emit_kernel
from compile.backends.cortexm.intrin import (DOT_PIXELS, DOT_ROWS, MIN_DOT, ReduceLastWeights,
                                    all_blocks, reduction_blocks, tensorize_dots)
from compile.backends.cortexm.memplan import access_times, elementwise_inputs, overlap_offsets
from compile.backends.cortexm.nnlib import OffloadConvolutions, emit, is_library_call
from compile.backends.cortexm.padfuse import FoldPadIntoConsumer
from compile.lower import tir_query
from compile.lower.fixedpoint import fits_int32


# a primitive that does not apply raises ScheduleError; a few TVM 0.27 checks fail with
# InternalError or ValueError instead (seen on integer softmax chains, strided convs)
_SCHEDULE_ERRORS = (s_tir.ScheduleError, tvm.error.InternalError, ValueError)
# a producer read more than once is inlined only if its statement has at most this many
# expression nodes: the committed MobileNetV2's requantized adds stay materialized, the
# committed models' smaller producers are inlined
INLINE_MAX_NODES = 220
# a schedule leaving an expression deeper than this takes the careful one: chained
# requantizations (conv -> quantized SUB -> quantized ADD, depth 57) inlined into each other
# take TVM's simplifier minutes; MobileNeXt's and MobileNetV2's deepest are 41
MAX_EXPR_DEPTH = 48
# output channels a depthwise convolution computes together (tile_channels)
CHANNEL_LANES = 4


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str                    # input | output | const | activation | workspace
    data: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Step:
    kernel: str                  # C function name
    args: list[str]              # tensor names, in the kernel's parameter order
    workspace: str | None = None
    inplace: tuple[int, ...] = ()   # args the output may overwrite (memplan.elementwise_inputs)
    overlap: dict[int, tuple[int, ...]] = field(default_factory=dict)  # dying arg -> offsets


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    steps: list[Step]
    kernels: dict[str, KernelC]
    input: str
    output: str
    macs: int = 0
    library: dict[str, tirx.PrimFunc] = field(default_factory=dict)  # nnlib calls' PrimFuncs
    # a placement to keep, with its buffers (memplan.refit): a tuned build keeps the untuned
    # one's, so that only the scratch of the calls it changes moves
    keep_plan: tuple | None = None


@relax.expr_functor.mutator
class _Renamer(relax.PyExprMutator):
    def __init__(self, mod=None):
        super().__init__(mod)
        self.count = 0

    def _fresh(self, var, cls):
        self.count += 1
        new = cls(f"v{self.count}", var.ty)
        self.set_var_remap(var, new)
        return new

    def visit_var_def_(self, var):
        return self._fresh(var, relax.Var)

    def visit_dataflow_var_def_(self, var):
        return self._fresh(var, relax.DataflowVar)


@relax.transform.function_pass(opt_level=0, name="UniqueVarNames")
def UniqueVarNames(func, mod, ctx):  # noqa: ARG001  (pass signature)
    """Every variable of ``func`` gets a name of its own (``v1``, ``v2``, ...).  FuseTIR
    names a fused kernel's parameters after the variables passed to it, and the integer
    lowering's passes reuse names: two parameters named alike are told apart in the C
    emitter only while their element counts differ (``cemit._Emitter.by_name``)."""
    return _Renamer(mod).visit_expr(func)


def relax_passes(library: bool = True) -> tvm.transform.Pass:
    """``library=False`` leaves the convolutions to TVM's kernels too (tests compare)."""
    return tvm.transform.Sequential([
        UniqueVarNames,
        *([OffloadConvolutions] if library else []),
        ReduceLastWeights,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        FoldPadIntoConsumer,
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(["main"]),
    ], name="cortexm_relax")


def tir_passes() -> tvm.transform.Pass:
    """The s_tir default lowering, cut before the packed API (we call kernels directly)."""
    return tvm.transform.Sequential([
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.StmtSimplify(),
        s_tir.transform.LowerOpaqueBlock(),
        tirx.transform.FlattenBuffer(),
        tirx.transform.NarrowDataType(32),
        s_tir.transform.LoopPartition(),
        tirx.transform.StorageRewrite(),
        tirx.transform.StmtSimplify(),
        tirx.transform.RemoveNoOp(),
        s_tir.transform.RewriteUnsafeSelect(),
        tirx.transform.CommonSubexprElim(),
    ], name="cortexm_tir")


def _is_reduction(block) -> bool:
    return any(int(iv.iter_type) == 2 for iv in block.iter_vars)


def _spatial_extents(block) -> list[int]:
    return [int(iv.dom.extent) for iv in block.iter_vars if int(iv.iter_type) == 0]


def _n_spatial(block) -> int:
    return sum(1 for iv in block.iter_vars if int(iv.iter_type) == 0)


def _inline_is_cheap(sch, block, careful: bool) -> bool:
    """Inlining copies the producer's expression into every read of its buffer: fine for
    one read or a small expression; repeated big ones blow up exponentially (e.g. an
    integer softmax's fixed-point exp chains), so those stay materialized."""
    stmt = sch.get(block)
    if len(stmt.writes) != 1:
        return False
    name = str(stmt.writes[0].source.name)
    reads = sum(tir_query.loads_of(sch.get(c).body, name) for c in sch.get_consumers(block))
    return reads <= 1 or (not careful and tir_query.expression_size(stmt.body) <= INLINE_MAX_NODES)


def expr_depth(expr) -> int:
    """Depth of a TIR expression tree (a buffer load, variable or constant is a leaf)."""
    kind = type(expr).__name__
    if expr is None or kind in ("Var", "IntImm", "FloatImm", "StringImm", "BufferLoad"):
        return 1 if expr is not None else 0
    children = []
    for name in ("condition", "true_value", "false_value", "a", "b", "value", "args"):
        child = getattr(expr, name, None)
        if child is not None:
            children.extend(child if isinstance(child, tvm_ffi.Array) else [child])
    return 1 + max((expr_depth(c) for c in children), default=0)


def max_expr_depth(func: tirx.PrimFunc) -> int:
    """The deepest value any block of ``func`` stores."""
    sch = s_tir.Schedule(func)
    return max((expr_depth(getattr(sch.get(b).body, "value", None)) for b in all_blocks(sch)),
               default=0)


def _apply(sch, primitive: str, *args):
    """``sch`` after the primitive, or unchanged when it does not apply.  Works on a copy:
    an InternalError can leave a half-modified schedule behind."""
    trial = sch.copy()
    try:
        getattr(trial, primitive)(*args)
    except _SCHEDULE_ERRORS:
        return sch, False
    return trial, True


def schedule_kernel(func: tirx.PrimFunc, careful: bool = False) -> tirx.PrimFunc:
    """Inline element-wise stages and fuse epilogues into reductions (see module doc).
    ``careful``: only inline producers read once (a fallback for the rare kernels where
    TVM 0.27 accepts a schedule it cannot lower).  ``reverse_compute_inline`` is not used:
    combined with ``reverse_compute_at`` it produced wrong code for a stride-2 conv."""
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        if _inline_is_cheap(sch, block, careful):
            sch, _ = _apply(sch, "compute_inline", block)
    sch = tile_channels(sch)
    for block in sch.get_child_blocks(root)[1:]:
        producers = sch.get_producers(block)
        # only an epilogue of a single reduction (conv, dense, sum) moves under its output
        # loops; other cases produced wrong code in TVM 0.27 (checked on the host)
        if len(producers) != 1 or not _is_reduction(sch.get(producers[0])):
            continue
        # and only an element-wise one: TVM covers just the producer's region, so an
        # epilogue that also pads (9x9 out of an 8x8 conv) would miss its border
        if _spatial_extents(sch.get(block)) != _spatial_extents(sch.get(producers[0])):
            # instead compute each needed reduction element inside the epilogue's loops
            n = _n_spatial(sch.get(block))
            loops = sch.get_loops(block)
            if n and len(loops) >= n:
                sch, _ = _apply(sch, "compute_at", producers[0], loops[n - 1], True)
            continue
        n = _n_spatial(sch.get(producers[0]))
        loops = sch.get_loops(producers[0])
        if n and len(loops) >= n:
            sch, _ = _apply(sch, "reverse_compute_at", block, loops[n - 1], True)
    return sch.mod["main"]


def tile_channels(sch):
    """Compute neighbouring output channels of a convolution together (NHWC keeps them
    contiguous in the input, the weights and the output); the element-wise epilogue follows
    each tile.  Two kinds:

    * taps-only reductions (depthwise, the one-channel stem): ``CHANNEL_LANES`` channels,
      innermost; a tap's bounds check and index math are paid once per tile and the
      accumulators become registers (unrolled loops, init hoisted by
      ``decompose_reduction``);
    * input-channel reductions of length K (K % 4 == 0): ``DOT_PIXELS`` pixels (when the
      width allows) x ``DOT_ROWS`` channels just outside the K loop, so that
      ``intrin.tensorize_dots`` can load and unpack each input and weight word once for
      two products.

    Channel counts the tile does not divide and other epilogues are left alone."""
    for name in reduction_blocks(sch):
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        n_red = sum(1 for iv in sch.get(block).iter_vars if int(iv.iter_type) == 2)
        consumers = sch.get_consumers(block)
        if (len(loops) <= n_red or len(consumers) != 1
                or len(sch.get_producers(consumers[0])) != 1
                or _spatial_extents(sch.get(consumers[0])) != _spatial_extents(sch.get(block))):
            continue
        ff, red = loops[-n_red - 1], loops[-n_red:]
        extent, k = sch.get(ff).extent, sch.get(red[-1]).extent
        if not all(isinstance(e, tvm.tirx.IntImm) for e in (extent, k)):
            continue
        taps_only = int(k) == 1
        if not taps_only and (int(k) < MIN_DOT or int(k) % 4):
            continue
        lanes = CHANNEL_LANES if taps_only else DOT_ROWS
        if int(extent) % lanes:
            continue
        xx = loops[-n_red - 2] if len(loops) > n_red + 1 and not taps_only else None
        if xx is not None and int(sch.get(xx).extent) % DOT_PIXELS:
            xx = None
        trial = sch.copy()
        try:
            ffo, ffi = trial.split(ff, [None, lanes])
            if taps_only:
                trial.reorder(*red, ffi)
            elif xx is not None:      # 2 pixels x 2 channels
                xxo, xxi = trial.split(xx, [None, DOT_PIXELS])
                trial.reorder(xxo, ffo, *red[:-1], xxi, ffi, red[-1])
            else:
                trial.reorder(*red[:-1], ffi, red[-1])
            trial.reverse_compute_at(consumers[0], ffo, True)
            if taps_only:
                init = trial.decompose_reduction(block, red[0])
                trial.unroll(ffi)
                trial.unroll(trial.get_loops(init)[-1])
        except _SCHEDULE_ERRORS:
            continue
        sch = trial
    return sch


def lower_kernel(prim: tirx.PrimFunc) -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """(scheduled, lowered) with the most aggressive schedule TVM can lower; the int8 dot
    products of ``lowered`` call the core's SIMD helper (``intrin.tensorize_dots``)."""
    for schedule in (schedule_kernel, lambda f: schedule_kernel(f, careful=True), None):
        scheduled = schedule(prim) if schedule else prim
        if schedule is schedule_kernel and max_expr_depth(scheduled) > MAX_EXPR_DEPTH:
            continue
        for tensorize in (tensorize_dots, None):
            final = tensorize(scheduled) if tensorize else scheduled
            try:
                return scheduled, tir_passes()(tvm.IRModule({"main": final}))["main"]
            except tvm.error.InternalError:   # a schedule TVM accepted but cannot lower
                if schedule is None and tensorize is None:
                    raise
    raise AssertionError("unreachable")


def _is(expr, *kinds: str) -> bool:
    """Class-name test: TVM 0.27 merged Relax and TIR expression classes into ``tvm.ir``."""
    return type(expr).__name__ in kinds


def _sinfo(var) -> tuple[tuple[int, ...], str]:
    ty = var.ty
    if type(ty).__name__ != "TensorType" or ty.shape is None:
        raise UnsupportedTIR(f"non-tensor value {var.name} ({ty})")
    try:
        shape = tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        raise UnsupportedTIR(f"dynamic shape of {var.name}") from None
    return shape, str(ty.dtype)


def lower_model(mod: tvm.IRModule, library: bool = True,
                knobs: Callable[[tirx.PrimFunc], tirx.PrimFunc] | None = None) -> Graph:
    """Turn the Relax module into a static graph; UnsupportedTIR names what is not handled.
    ``library``: quantized convolutions call ``firmware/sg_nn.h`` (``nnlib``); ``knobs`` maps
    each such call's PrimFunc to the one to emit (its schedule choices from a tuning
    database: ``tuning.py``)."""
    with tvm.transform.PassContext(opt_level=3):
        mod = relax_passes(library)(mod)
    main = mod["main"]
    if len(main.params) != 1:
        raise UnsupportedTIR(f"main takes {len(main.params)} inputs (one is supported)")
    tensors: dict[str, Tensor] = {}
    names: dict[object, str] = {}   # relax Var / Constant (by handle) -> tensor name
    steps: list[Step] = []
    kernels: dict[str, KernelC] = {}
    kernel_of: dict[str, str] = {}  # PrimFunc name -> C kernel name
    kernel_macs: dict[str, int] = {}
    kernel_inplace: dict[str, tuple[int, ...]] = {}
    lowered_of: dict[str, tirx.PrimFunc] = {}
    library_of: dict[str, tirx.PrimFunc] = {}

    def key(expr):
        return expr.__hash__()

    inp = main.params[0]
    shape, dtype = _sinfo(inp)
    tensors["input"] = Tensor("input", shape, dtype, "input")
    names[key(inp)] = "input"

    def operand(arg) -> str:
        if _is(arg, "GenericConst", "Constant"):
            if key(arg) not in names:
                name = f"c{sum(t.kind == 'const' for t in tensors.values())}"
                data = arg.value.numpy()
                tensors[name] = Tensor(name, tuple(data.shape), str(data.dtype), "const", data)
                names[key(arg)] = name
            return names[key(arg)]
        if _is(arg, "Var", "DataflowVar") and key(arg) in names:
            return names[key(arg)]
        raise UnsupportedTIR(f"argument {arg} of a kernel call")

    call_tir = tvm.ir.Op.get("relax.call_tir")
    macs = 0
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if _is(value, "Var", "DataflowVar"):          # alias
                names[key(binding.var)] = operand(value)
                continue
            if not (_is(value, "Call") and value.op.same_as(call_tir)):
                op = value.op.name if _is(value, "Call") and hasattr(
                    value.op, "name") else type(value).__name__
                raise UnsupportedTIR(f"operator {op} (no TIR lowering for it)")
            gv, args = value.args[0], list(value.args[1].fields)
            prim = mod[gv]
            if gv.name_hint not in kernel_of:
                cname = f"sg_k{len(kernels)}_{gv.name_hint}"[:60]
                if is_library_call(prim):      # firmware/sg_nn.h; the TIR is its reference
                    prim = knobs(prim) if knobs else prim
                    library_of[cname] = scheduled = prim
                    lowered = tir_passes()(tvm.IRModule({"main": prim}))["main"]
                    kernels[cname] = emit(cname, prim)
                else:
                    scheduled, lowered = lower_kernel(prim)
                    kernels[cname] = emit_kernel(cname, lowered)
                kernel_macs[cname] = count_macs(scheduled)
                kernel_of[gv.name_hint] = cname
                kernel_inplace[cname] = elementwise_inputs(prim)
                lowered_of[cname] = lowered
            cname = kernel_of[gv.name_hint]
            macs += kernel_macs[cname]
            out = f"t{len(steps)}"
            shape, dtype = _sinfo(binding.var)
            tensors[out] = Tensor(out, shape, dtype, "activation")
            names[key(binding.var)] = out
            step = Step(cname, [operand(a) for a in args] + [out], inplace=kernel_inplace[cname])
            for group in kernels[cname].same_tensor:
                if len({step.args[i] for i in group}) != 1:
                    raise UnsupportedTIR(f"kernel {cname} reads parameters {list(group)} as one "
                                         "tensor, but the model passes different ones")
            if kernels[cname].workspace_bytes:
                ws = f"ws{len(steps)}"
                tensors[ws] = Tensor(ws, (kernels[cname].workspace_bytes,), "uint8", "workspace")
                step.workspace = ws
            steps.append(step)
    body = main.body.body
    if not _is(body, "Var", "DataflowVar") or key(body) not in names:
        raise UnsupportedTIR("main must return one tensor")
    output = names[key(body)]
    if tensors[output].kind != "activation":
        # a model that only moves data (a RESHAPE) returns its input: copy it to the output
        src = tensors[output]
        cname = f"sg_k{len(kernels)}_copy"
        lowered_of[cname] = lower_kernel(_copy_kernel(src.shape, src.dtype))[1]
        kernels[cname] = emit_kernel(cname, lowered_of[cname])
        output = f"t{len(steps)}"
        tensors[output] = Tensor(output, src.shape, src.dtype, "activation")
        steps.append(Step(cname, [src.name, output]))
    tensors[output].kind = "output"
    narrow_constants(steps, tensors, kernels, lowered_of)
    _find_overlaps(steps, tensors, lowered_of)
    return Graph(tensors, steps, kernels, "input", output, macs, library_of)


def _copy_kernel(shape: tuple[int, ...], dtype: str) -> tirx.PrimFunc:
    from tvm import te

    x = te.placeholder(shape, dtype, "x")
    return te.create_prim_func([x, te.compute(shape, lambda *i: x(*i), "copy")])


def narrow_constants(steps: list[Step], tensors: dict[str, Tensor],
                     kernels: dict[str, KernelC], lowered: dict) -> None:
    """Store int64 constants whose values all fit int32 as int32 (in place): the
    per-channel requantization multipliers of ``compile/lower/fixedpoint.py``.  The
    kernels read them widened (``cemit.emit_kernel(narrow=...)``), so the arithmetic is
    unchanged, but a 32-bit core multiplies by a sign-extended word instead of a full
    64-bit operand, and the constants take half the flash.  A kernel parameter is narrowed
    only if it is such a constant at every call, and a constant only if every read of it
    is narrowed."""
    def fits(name: str) -> bool:
        t = tensors[name]
        return t.kind == "const" and t.dtype == "int64" and fits_int32(t.data)

    narrow = {k: set(range(len(kernels[k].param_dtypes))) for k in kernels}
    for step in steps:
        narrow[step.kernel] &= {i for i, a in enumerate(step.args) if fits(a)}
    changed = True
    while changed:          # a constant read where it cannot be narrowed stays int64
        wide = {a for s in steps for i, a in enumerate(s.args) if i not in narrow[s.kernel]}
        changed = False
        for step in steps:
            drop = {i for i in narrow[step.kernel] if step.args[i] in wide}
            changed |= bool(drop)
            narrow[step.kernel] -= drop
    for cname, params in narrow.items():
        if params:
            kernels[cname] = emit_kernel(cname, lowered[cname], dict.fromkeys(params, "int32"))
    for step in steps:
        for i, a in enumerate(step.args):
            if kernels[step.kernel].param_dtypes[i] == "int32" and tensors[a].dtype == "int64":
                tensors[a].data = tensors[a].data.astype(np.int32)
                tensors[a].dtype = "int32"


def _find_overlaps(steps: list[Step], tensors: dict[str, Tensor], lowered: dict) -> None:
    """``Step.overlap``: for each activation read once by a step and dying there, the
    offsets at which the step's output may overlap it, from the order in which the lowered
    kernel reads and writes them (``memplan.access_times`` / ``overlap_offsets``).
    ``Step.inplace`` keeps only such activations too."""
    last = {a: i for i, s in enumerate(steps) for a in s.args[:-1]}
    found: dict[tuple[str, int], tuple[int, ...]] = {}
    for i, step in enumerate(steps):
        if tensors[step.args[-1]].kind != "activation":
            step.inplace = ()
            continue
        dying = [k for k, arg in enumerate(step.args[:-1]) if tensors[arg].kind == "activation"
                 and last[arg] == i and step.args.count(arg) == 1]
        step.inplace = tuple(k for k in step.inplace if k in dying)
        for k in dying:
            if (step.kernel, k) not in found:
                times = access_times(lowered[step.kernel], k, len(step.args) - 1)
                found[(step.kernel, k)] = () if times is None else overlap_offsets(*times)
            if found[(step.kernel, k)]:
                step.overlap[k] = found[(step.kernel, k)]


def count_macs(func: tirx.PrimFunc) -> int:
    """Iteration volume of reduction blocks whose update multiplies (conv, dense, ...)."""
    total = 0
    sch = s_tir.Schedule(func)
    for block_rv in all_blocks(sch):
        block = sch.get(block_rv)
        if not any(int(iv.iter_type) == 2 for iv in block.iter_vars):
            continue
        if not tir_query.multiplies(block.body):      # a max/sum reduction is not a MAC
            continue
        volume = 1
        for iv in block.iter_vars:
            volume *= int(iv.dom.extent)
        total += volume
    return total

