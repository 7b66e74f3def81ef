"""The Cortex-M static memory plan (compile/backends/cortexm/memplan.py, padfuse.py), checked on the
plan itself: no two live tensors share a byte except declared aliased pairs (in place or
overlapping, at their offset), the arena is at least the lower bound, within 5 % of the
largest sum of live tensors and not above TFLite Micro's, the in-place rule refuses kernels that are not element-wise, the overlap
rule follows the kernel's access order, and pads move into the convolution reading them."""
import re

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from compile.backends.cortexm import memplan, project
from compile.backends.cortexm.graph import lower_model, relax_passes
from compile.backends.cortexm.memplan import Buffer
from compile.backends.cortexm.padfuse import FoldPadIntoConsumer
from compile.backends.cortexm.tflm import tflm_arena
from compile.pipeline import compile_model
from tests.factory import build_tflite

# small registry models: a MobileNet-like CNN (padded stride-2 depthwise after a residual
# add) and a sandglass block with identity multiplier 1/2 (slice + add + concat)
GRAPH_MODELS = ("small_cnn", "identity_block")


def random_buffers(seed: int, n: int = 40, steps: int = 30) -> tuple[list[Buffer], list]:
    """Random lifetimes, plus candidate aliased pairs (an output over an input that dies
    at the step writing it, in place or at a random offset)."""
    rng = np.random.default_rng(seed)
    out, candidates = [], []
    for i in range(n):
        first = int(rng.integers(0, steps))
        last = int(rng.integers(first, min(steps, first + 6)))
        out.append(Buffer(f"b{i}", int(rng.integers(1, 5000)), first, last))
        if rng.random() < 0.3:
            size = out[-1].size if rng.random() < 0.5 else int(rng.integers(1, 5000))
            nxt = Buffer(f"b{i}x", size, last, int(rng.integers(last, last + 4)))
            out.append(nxt)
            offset = 0 if size == out[-2].size else memplan.ALIGN * int(rng.integers(-80, 80))
            candidates.append((nxt.name, out[-2].name, offset))
    return out, candidates


def overlapping_pairs(buffers, plan):
    """Pairs of buffers live at the same step whose byte ranges intersect, other than the
    plan's aliased pairs exactly at their offset (should be none)."""
    allowed = {(out, inp, d) for out, inp, d in plan.aliases}
    bad = []
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            oa, ob = plan.offsets[a.name], plan.offsets[b.name]
            if a.first <= b.last and b.first <= a.last and oa < ob + b.size and ob < oa + a.size:
                if not ({(a.name, b.name, oa - ob), (b.name, a.name, ob - oa)} & allowed):
                    bad.append((a.name, b.name))
    return bad


@pytest.mark.parametrize("seed", range(20))
def test_plan_never_overlaps_live_buffers(seed):
    buffers, candidates = random_buffers(seed)
    pairs = memplan.aliases(buffers, candidates)
    assert pairs
    for plan in (memplan.plan(buffers), memplan.plan(buffers, pairs)):
        assert overlapping_pairs(buffers, plan) == []
        memplan.check(buffers, plan)
        assert plan.lower_bound <= plan.arena_bytes
        assert all(off % memplan.ALIGN == 0 for off in plan.offsets.values())
        assert all(plan.offsets[b.name] + b.size <= plan.arena_bytes for b in buffers)
    assert memplan.plan(buffers, pairs).arena_bytes <= memplan.plan(buffers).arena_bytes


def test_chain_reuses_memory_and_meets_lower_bound():
    # a -> b -> c -> d: each buffer only overlaps its neighbours, two slots suffice
    chain = [Buffer("a", 1000, 0, 1), Buffer("b", 800, 1, 2), Buffer("c", 1000, 2, 3),
             Buffer("d", 800, 3, 4)]
    plan = memplan.plan(chain)
    assert plan.arena_bytes == plan.lower_bound == 1008 + 800
    assert plan.offsets["a"] != plan.offsets["b"]


def test_inplace_pair_counts_once_and_shares_its_offset():
    # x -> (elementwise) y -> z: y written over x at step 1
    bufs = [Buffer("x", 1024, 0, 1), Buffer("y", 1024, 1, 2), Buffer("z", 512, 2, 3)]
    pairs = memplan.aliases(bufs, [("y", "x", 0)])
    assert pairs == [("y", "x", 0)]
    plan = memplan.plan(bufs, pairs)
    assert plan.offsets["y"] == plan.offsets["x"] and plan.aliases == pairs
    assert plan.lower_bound == plan.live_bound == plan.arena_bytes == 1024 + 512
    assert memplan.plan(bufs).lower_bound == 2048          # without the pair


def test_overlapping_pair_counts_its_footprint():
    # a 1x1 expansion: 256 B in, 1024 B out, written from 784 B below its input
    bufs = [Buffer("x", 256, 0, 1), Buffer("y", 1024, 1, 2), Buffer("z", 128, 2, 3)]
    plan = memplan.plan(bufs, memplan.aliases(bufs, [("y", "x", -784)]))
    assert plan.aliases == [("y", "x", -784)]
    assert plan.offsets["x"] - plan.offsets["y"] == 784
    # step 1 holds 784 + 256 B instead of 256 + 1024 B; step 2 (y + z) is now the peak
    assert plan.lower_bound == plan.arena_bytes == 1024 + 128
    assert plan.live_bound == 256 + 1024                  # live tensors, no overlap


def test_aliases_need_a_dying_input_and_one_partner_each():
    bufs = [Buffer("x", 64, 0, 2), Buffer("y", 64, 1, 3), Buffer("u", 32, 0, 1),
            Buffer("v", 64, 1, 2), Buffer("w", 64, 2, 3)]
    # x is still read at step 2 (after y is written); v over u at 8 B is not aligned;
    # w over v is fine (at two offsets), and v cannot take a second output
    cands = [("y", "x", 0), ("v", "u", 8), ("w", "v", 0), ("w", "v", -16), ("y", "v", 0)]
    assert memplan.aliases(bufs, cands) == [("w", "v", 0), ("w", "v", -16)]
    with pytest.raises(ValueError):
        memplan.plan(bufs, [("y", "x", 0)])


def test_refit_keeps_every_placement_and_puts_a_grown_scratch_in_a_gap():
    """A kernel's scratch grows: the others keep their offsets, the scratch takes the lowest
    gap free over its step, and a scratch with no such gap refuses the plan."""
    base_buffers = [Buffer("a", 64, 0, 1), Buffer("ws1", 16, 1, 1), Buffer("b", 32, 1, 2),
                    Buffer("c", 192, 2, 3)]
    base = memplan.plan(base_buffers)
    grown = [b if b.name != "ws1" else Buffer("ws1", 48, 1, 1) for b in base_buffers]
    refit = memplan.refit(base, base_buffers, grown)
    assert refit is not None and refit.arena_bytes == base.arena_bytes
    assert {k: v for k, v in refit.offsets.items() if k != "ws1"} == {
        k: v for k, v in base.offsets.items() if k != "ws1"}
    memplan.check(grown, refit)
    live = [(refit.offsets[n], refit.offsets[n] + s) for n, s in (("a", 64), ("b", 32))]
    free = [o for o in range(0, refit.arena_bytes - 47, 16)
            if all(o + 48 <= lo or o >= hi for lo, hi in live)]
    assert refit.offsets["ws1"] == min(free)
    too_big = [b if b.name != "ws1" else Buffer("ws1", base.arena_bytes, 1, 1)
               for b in base_buffers]
    assert memplan.refit(base, base_buffers, too_big) is None
    gone = [b for b in base_buffers if b.name != "ws1"]
    assert memplan.refit(base, base_buffers, gone).offsets == {
        k: v for k, v in base.offsets.items() if k != "ws1"}


def test_check_catches_overlap():
    buffers = [Buffer("a", 64, 0, 2), Buffer("b", 64, 1, 3)]
    bad = memplan.Plan({"a": 0, "b": 32}, 96, 128)
    with pytest.raises(AssertionError, match="overlap"):
        memplan.check(buffers, bad)
    # an aliased pair must sit exactly at its offset
    pair = [Buffer("x", 64, 0, 1), Buffer("y", 64, 1, 2)]
    with pytest.raises(AssertionError, match="overlap"):
        memplan.check(pair, memplan.Plan({"x": 0, "y": 32}, 96, 64, [("y", "x", 0)]))
    with pytest.raises(AssertionError, match="overlap"):
        memplan.check(pair, memplan.Plan({"x": 32, "y": 16}, 96, 64, [("y", "x", -32)]))
    memplan.check(pair, memplan.Plan({"x": 0, "y": 0}, 64, 64, [("y", "x", 0)]))
    memplan.check(pair, memplan.Plan({"x": 32, "y": 0}, 96, 64, [("y", "x", -32)]))


# -- the in-place rule on TIR -----------------------------------------------------------------
@T.prim_func(private=True, s_tir=True)
def add(a: T.Buffer((4, 8), "int8"), b: T.Buffer((4, 8), "int8"), y: T.Buffer((4, 8), "int8")):
    for i, j in T.grid(4, 8):
        with T.sblock("y"):
            vi, vj = T.axis.remap("SS", [i, j])
            y[vi, vj] = a[vi, vj] + b[vi, vj]


@T.prim_func(private=True, s_tir=True)
def partial_shortcut(x: T.Buffer((2, 8), "int8"), f: T.Buffer((2, 8), "int8"),
                     y: T.Buffer((2, 8), "int8")):
    # the identity tensor multiplier: y = concat(x[:, :3] + f[:, :3], f[:, 3:])
    head = T.sblock_alloc_buffer((2, 3), "int8")
    tail = T.sblock_alloc_buffer((2, 5), "int8")
    for i, j in T.grid(2, 3):
        with T.sblock("head"):
            vi, vj = T.axis.remap("SS", [i, j])
            head[vi, vj] = x[vi, vj] + f[vi, vj]
    for i, j in T.grid(2, 5):
        with T.sblock("tail"):
            vi, vj = T.axis.remap("SS", [i, j])
            tail[vi, vj] = f[vi, vj + 3]
    for i, j in T.grid(2, 8):
        with T.sblock("concat"):
            vi, vj = T.axis.remap("SS", [i, j])
            y[vi, vj] = T.if_then_else(3 <= vj, tail[vi, vj - 3], head[vi, vj])


@T.prim_func(private=True, s_tir=True)
def shifted(x: T.Buffer((8,), "int8"), y: T.Buffer((8,), "int8")):
    # y[i] = x[i + 1]: in place only safe for one loop direction, which the rule does
    # not assume (it accepts reads of the same element only)
    for i in range(8):
        with T.sblock("y"):
            vi = T.axis.spatial(8, i)
            y[vi] = T.if_then_else(vi < 7, x[vi + 1], T.int8(0))


@T.prim_func(private=True, s_tir=True)
def transpose(x: T.Buffer((4, 4), "int8"), y: T.Buffer((4, 4), "int8")):
    for i, j in T.grid(4, 4):
        with T.sblock("y"):
            vi, vj = T.axis.remap("SS", [i, j])
            y[vi, vj] = x[vj, vi]


@T.prim_func(private=True, s_tir=True)
def row_sum(x: T.Buffer((4, 4), "int32"), y: T.Buffer((4, 4), "int32")):
    # a depthwise-like neighbourhood: every output reads its whole row
    for i, j, k in T.grid(4, 4, 4):
        with T.sblock("y"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                y[vi, vj] = 0
            y[vi, vj] = y[vi, vj] + x[vi, vk]


@T.prim_func(private=True, s_tir=True)
def gather(x: T.Buffer((8,), "int8"), idx: T.Buffer((8,), "int32"), y: T.Buffer((8,), "int8")):
    for i in range(8):
        with T.sblock("y"):
            vi = T.axis.spatial(8, i)
            y[vi] = x[idx[vi]]


@T.prim_func(private=True, s_tir=True)
def widen(x: T.Buffer((8,), "int8"), b: T.Buffer((8,), "int32"), y: T.Buffer((8,), "int32")):
    for i in range(8):
        with T.sblock("y"):
            vi = T.axis.spatial(8, i)
            y[vi] = T.Cast("int32", x[vi]) + b[vi]


def test_inplace_rule_accepts_elementwise_kernels():
    assert memplan.elementwise_inputs(add) == (0, 1)
    assert memplan.elementwise_inputs(partial_shortcut) == (0, 1)
    assert memplan.elementwise_inputs(widen) == (1,)       # x is int8, the output int32


def test_inplace_rule_refuses_non_elementwise_consumers():
    for func in (shifted, transpose, row_sum, gather):
        assert memplan.elementwise_inputs(func) == (), func


# -- the overlap rule on lowered TIR: program order ------------------------------------------
@T.prim_func(private=True)
def expand(x: T.Buffer((64,), "int8"), y: T.Buffer((128,), "int8")):
    # a 1x1 conv 1 -> 2 channels, flattened: pixel p reads x[p] once per output channel
    for p, c in T.grid(64, 2):
        y[p * 2 + c] = x[p] + T.Cast("int8", c)


@T.prim_func(private=True)
def downsample(x: T.Buffer((128,), "int8"), y: T.Buffer((64,), "int8")):
    for p in range(64):
        y[p] = x[p * 2] + x[p * 2 + 1]


@T.prim_func(private=True)
def helper(x: T.Buffer((8,), "int8"), y: T.Buffer((8,), "int8")):
    # an opaque helper reading x[2p:2p+2] and writing y[2p:2p+2]: order inside unknown
    for p in range(4):
        T.evaluate(T.call_extern("int32", "sg_copy2",
                                 T.tvm_access_ptr(T.type_annotation("int8"), x.data, p * 2, 2, 1),
                                 T.tvm_access_ptr(T.type_annotation("int8"), y.data, p * 2, 2, 2)))


@T.prim_func(private=True)
def lookup(x: T.Buffer((8,), "int8"), idx: T.Buffer((8,), "int32"), y: T.Buffer((8,), "int8")):
    for p in range(8):
        y[p] = x[idx[p]]


def run_overlapped(kernel, x: np.ndarray, ny: int, d: int) -> np.ndarray:
    """``kernel`` (a Python rendering of the TIR above, in its program order) run with y
    placed d bytes from x in one memory: what the firmware does with an overlapping pair."""
    base = max(0, -d)
    mem = np.zeros(base + max(len(x), d + ny), dtype=object)   # Python ints: no overflow
    mem[base:base + len(x)] = x.tolist()
    kernel(lambda i: mem[base + i], lambda i, v: mem.__setitem__(base + d + i, v))
    return mem[base + d:base + d + ny]


def expand_py(rd, wr):
    for p in range(64):
        for c in range(2):
            wr(p * 2 + c, rd(p) * 10**7 + c)


def downsample_py(rd, wr):
    for p in range(64):
        wr(p, rd(p * 2) * 10**7 + rd(p * 2 + 1))


def test_access_times_follow_program_order():
    last_read, first_write = memplan.access_times(expand, 0, 1)
    # slots: each leaf statement takes two (read, write); (p, c) is slot pair 2 * p + c
    np.testing.assert_array_equal(last_read, [2 * (2 * p + 1) for p in range(64)])
    np.testing.assert_array_equal(first_write, [2 * k + 1 for k in range(128)])
    last_read, first_write = memplan.access_times(helper, 0, 1)
    np.testing.assert_array_equal(last_read, first_write)         # a call: simultaneous


@pytest.mark.parametrize("kernel, py, nx, ny", [(expand, expand_py, 64, 128),
                                                (downsample, downsample_py, 128, 64)])
def test_overlap_offsets_are_safe_and_the_unsafe_ones_are_refused(kernel, py, nx, ny):
    x = np.random.default_rng(0).integers(1, 10**6, nx)     # an overwritten x shows
    reference = run_overlapped(py, x, ny, nx + 64)                # disjoint
    safe = memplan.overlap_offsets(*memplan.access_times(kernel, 0, 1))
    assert safe and all(d % memplan.ALIGN == 0 for d in safe)
    for d in safe:
        np.testing.assert_array_equal(run_overlapped(py, x, ny, d), reference)
    # with 1-byte alignment, every offset the rule's condition accepts is safe, and every
    # offset it refuses corrupts the output
    last_read, first_write = memplan.access_times(kernel, 0, 1)
    for d in range(-ny, nx):
        lo, hi = max(0, d), min(nx, d + ny)
        ok = bool(np.all(first_write[lo - d:hi - d] > last_read[lo:hi]))
        same = np.array_equal(run_overlapped(py, x, ny, d), reference)
        assert ok == same, d


def test_overlap_rule_refuses_helpers_on_the_same_bytes_and_data_dependent_indices():
    assert 0 not in memplan.overlap_offsets(*memplan.access_times(helper, 0, 1))
    assert memplan.access_times(lookup, 0, 2) is None


# -- pads go into their consumer --------------------------------------------------------------
def test_trailing_pad_moves_from_producer_group_to_consumer_group():
    @I.ir_module
    class Before:
        @T.prim_func(private=True, s_tir=True)
        def relu(x: T.Buffer((4,), "int32"), y: T.Buffer((4,), "int32")):
            T.func_attr({"op_pattern": 0})
            for i in range(4):
                with T.sblock("y"):
                    vi = T.axis.spatial(4, i)
                    y[vi] = T.max(x[vi], 0)

        @T.prim_func(private=True, s_tir=True)
        def pad(x: T.Buffer((4,), "int32"), y: T.Buffer((6,), "int32")):
            T.func_attr({"op_pattern": 0})
            for i in range(6):
                with T.sblock("y"):
                    vi = T.axis.spatial(6, i)
                    y[vi] = T.if_then_else(1 <= vi and vi < 5, x[vi - 1], -3)

        @T.prim_func(private=True, s_tir=True)
        def conv(x: T.Buffer((6,), "int32"), y: T.Buffer((4,), "int32")):
            T.func_attr({"op_pattern": 4})
            for i in range(4):
                with T.sblock("y"):
                    vi = T.axis.spatial(4, i)
                    y[vi] = x[vi] + x[vi + 1] + x[vi + 2]

        @R.function(private=True)
        def fused_relu_pad(x: R.Tensor((4,), "int32")) -> R.Tensor((6,), "int32"):
            R.func_attr({"Primitive": True})
            cls = Before
            with R.dataflow():
                a = R.call_tir(cls.relu, (x,), out_ty=R.Tensor((4,), "int32"))
                p = R.call_tir(cls.pad, (a,), out_ty=R.Tensor((6,), "int32"))
                R.output(p)
            return p

        @R.function(private=True)
        def fused_conv(p: R.Tensor((6,), "int32")) -> R.Tensor((4,), "int32"):
            R.func_attr({"Primitive": True})
            cls = Before
            with R.dataflow():
                y = R.call_tir(cls.conv, (p,), out_ty=R.Tensor((4,), "int32"))
                R.output(y)
            return y

        @R.function
        def main(x: R.Tensor((4,), "int32")) -> R.Tensor((4,), "int32"):
            cls = Before
            with R.dataflow():
                p = cls.fused_relu_pad(x)       # the producer writes the padded (6,) tensor
                y = cls.fused_conv(p)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @T.prim_func(private=True, s_tir=True)
        def relu(x: T.Buffer((4,), "int32"), y: T.Buffer((4,), "int32")):
            T.func_attr({"op_pattern": 0})
            for i in range(4):
                with T.sblock("y"):
                    vi = T.axis.spatial(4, i)
                    y[vi] = T.max(x[vi], 0)

        @T.prim_func(private=True, s_tir=True)
        def pad(x: T.Buffer((4,), "int32"), y: T.Buffer((6,), "int32")):
            T.func_attr({"op_pattern": 0})
            for i in range(6):
                with T.sblock("y"):
                    vi = T.axis.spatial(6, i)
                    y[vi] = T.if_then_else(1 <= vi and vi < 5, x[vi - 1], -3)

        @T.prim_func(private=True, s_tir=True)
        def conv(x: T.Buffer((6,), "int32"), y: T.Buffer((4,), "int32")):
            T.func_attr({"op_pattern": 4})
            for i in range(4):
                with T.sblock("y"):
                    vi = T.axis.spatial(4, i)
                    y[vi] = x[vi] + x[vi + 1] + x[vi + 2]

        @R.function(private=True)
        def fused_relu_pad_unpadded(x: R.Tensor((4,), "int32")) -> R.Tensor((4,), "int32"):
            R.func_attr({"Primitive": True})
            cls = Expected
            with R.dataflow():
                a = R.call_tir(cls.relu, (x,), out_ty=R.Tensor((4,), "int32"))
                R.output(a)
            return a

        @R.function(private=True)
        def fused_conv_padded(a: R.Tensor((4,), "int32")) -> R.Tensor((4,), "int32"):
            R.func_attr({"Primitive": True})
            cls = Expected
            with R.dataflow():
                p = R.call_tir(cls.pad, (a,), out_ty=R.Tensor((6,), "int32"))
                y = R.call_tir(cls.conv, (p,), out_ty=R.Tensor((4,), "int32"))
                R.output(y)
            return y

        @R.function
        def main(x: R.Tensor((4,), "int32")) -> R.Tensor((4,), "int32"):
            cls = Expected
            with R.dataflow():
                a = cls.fused_relu_pad_unpadded(x)   # only the (4,) tensor is materialized
                y = cls.fused_conv_padded(a)
                R.output(y)
            return y

    after = relax.transform.DeadCodeElimination(["main"])(FoldPadIntoConsumer(Before))
    tvm.ir.assert_structural_equal(after, Expected)


# -- real graphs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("memplan_models")
    return {name: build_tflite(name, out) for name in GRAPH_MODELS}


def assert_plan_is_sound(graph, plan, buffers):
    """The plan against the graph: only declared aliased pairs overlap, and each of those
    is a step whose kernel a rule accepted at that offset (in place: the element-wise rule;
    otherwise the access-order rule), over an input that dies at that step."""
    assert overlapping_pairs(buffers, plan) == []
    memplan.check(buffers, plan)
    assert plan.lower_bound <= plan.arena_bytes
    by_name = {b.name: b for b in buffers}
    for out, inp, offset in plan.aliases:
        step = next(s for s in graph.steps if s.args[-1] == out)
        k = step.args.index(inp)
        assert (offset == 0 and k in step.inplace) or offset in step.overlap.get(k, ())
        assert by_name[inp].last == by_name[out].first


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_real_graph_plan_is_sound_tight_and_beats_tflm(graph_models, name):
    mod = compile_model(graph_models[name])[0]
    # no kernel writes a padded copy of an activation: every pad runs inside its conv
    with tvm.transform.PassContext(opt_level=3):
        fused = relax_passes()(mod)
    kernels = [gv.name_hint for gv, f in fused.functions.items() if "PrimFunc" in type(f).__name__]
    assert not [k for k in kernels if re.search(r"(^|_)pad\d*$", k)]
    graph = lower_model(mod)
    plan, buffers = project.plan_memory(graph)
    assert_plan_is_sound(graph, plan, buffers)
    assert plan.arena_bytes <= 1.05 * plan.live_bound
    # TFLite Micro's planned (non-persistent) arena also holds the input and the output
    tflm = tflm_arena(graph_models[name])
    io = graph.tensors[graph.input].nbytes + graph.tensors[graph.output].nbytes
    assert plan.arena_bytes <= tflm["head_bytes"], (plan.arena_bytes, io, tflm)


def shortcut_module() -> tvm.IRModule:
    """a = x W0; b = a W1; c = concat(a[:, :4] + b[:, :4], b[:, 4:]); y = c W2 -- the
    shortcut kernel is element-wise in a and b, and both die there."""
    rng = np.random.default_rng(0)
    w = [relax.const(rng.integers(-3, 4, (8, 8)).astype("int32")) for _ in range(3)]
    x = relax.Var("x", R.Tensor((1, 8), "int32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.matmul(x, w[0]))
            b = bb.emit(relax.op.matmul(a, w[1]))
            head = bb.emit(relax.op.add(relax.op.strided_slice(a, [1], [0], [4]),
                                        relax.op.strided_slice(b, [1], [0], [4])))
            c = bb.emit(relax.op.concat([head, relax.op.strided_slice(b, [1], [4], [8])], 1))
            y = bb.emit_output(relax.op.matmul(c, w[2]))
        bb.emit_func_output(y)
    return bb.get()


def test_partial_shortcut_is_one_kernel_written_in_place():
    graph = lower_model(shortcut_module())
    plan, buffers = project.plan_memory(graph)
    assert_plan_is_sound(graph, plan, buffers)
    shortcut = [s for s in graph.steps if "strided_slice" in s.kernel]
    assert len(shortcut) == 1 and shortcut[0].inplace == (0, 1)
    assert plan.aliases == [(shortcut[0].args[-1], shortcut[0].args[0], 0)]
    # a, b live together (64 B), then c takes a's bytes: the arena is 2 x 32 B, not 3 x 32 B
    assert plan.arena_bytes == plan.lower_bound == plan.live_bound == 64
