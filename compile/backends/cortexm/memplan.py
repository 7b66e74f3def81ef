"""Static memory plan: every activation and kernel workspace in ONE arena.

A buffer lives from the step that writes it to the last step that reads it (a kernel's
workspace lives during its own step only).  Two buffers may share bytes when their
lifetimes do not overlap, or when they are a declared **aliased pair**: a step's output
placed at a fixed offset over an input that dies at that step.  Two findings, both on the
kernel's TIR, never assumed, allow a pair:

* in place (offset 0), ``elementwise_inputs``: same shape and dtype, and every output
  element depends on the input element at the same index and on no other one of it.
  Each output index is followed back through the fused kernel's blocks (slices,
  reshapes, concatenation, casts, fixed-point arithmetic) with concrete indices, under
  the branch conditions of ``if_then_else``/``Select``; a reduction, a data-dependent
  index, a block not writing at its own iteration variables or any construct the walk
  does not know refuses.  A kernel reading ``x[i]`` to write ``y[i]`` then never reads
  an element it has already overwritten, whatever its loop order.
* overlap (any offset), ``access_times`` + ``overlap_offsets``: the lowered kernel is
  walked in program order for all loop iterations at once, giving the time of the last
  read of every input byte and of the first write of every output byte; the output may
  sit ``d`` bytes from the input when no output byte is written before the input byte
  under it has been read for the last time.  A 1x1 expansion writes its output from
  below its input (d < 0), a stride-2 depthwise conv over its own input (d = 0): the two
  convolutions around MobileNeXt-mcu's peak then need 32,784 bytes instead of 40,960.
  Helper calls count their pointer reads and writes as simultaneous (unsafe), conditions
  the walk cannot evaluate count both branches (reads later, writes earlier).

``aliases`` adds the lifetime conditions; the firmware drops ``restrict`` from the
kernels of aliased steps, so C keeps the order of their loads and stores.

Placement is greedy (each buffer, or each chain of aliased buffers as one rigid block, at
the lowest aligned offset where nothing live at the same time collides) -- the "greedy by
size" strategy of TFLite Micro's ``GreedyMemoryPlanner`` and of Pisarchyk & Lee,
"Efficient Memory Management for Deep Neural Net Inference" (arXiv 2001.03288).  Several
orders are tried (largest first, longest lifetime, earliest, size x lifetime, outwards
from the peak step) and the smallest arena kept.  An aliased chain drifts (each overlap
moves the next output below its input), so pairs are taken only where they pay: from the
peak step on, one more pair per round, keeping the smallest arena seen.

Two bounds are reported.  ``live_bound`` is the classic one (the best TFLite
Micro's planner can reach): the largest sum over a step of the (aligned) sizes of the
buffers live at it, an in-place pair counted once.  Overlaps take the arena below it, so
``lower_bound`` counts each aliased pair the plan uses as its footprint (not the sum of
its two sizes) at the step they share: no plan with these lifetimes and these overlaps
can be smaller.  (Counting every *allowed* pair would give a still lower figure, but not
a reachable one: each overlap moves the next output below its input, and a rigid chain
of them drifts.)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

ALIGN = 16
# index states (buffer, indices, mask) the in-place walk visits before it gives up
MAX_WALK_STATES = 4096


@dataclass(frozen=True)
class Buffer:
    name: str
    size: int
    first: int                  # first step it is live (written)
    last: int                   # last step it is live (read)

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class Plan:
    offsets: dict[str, int]
    arena_bytes: int
    lower_bound: int
    # (output, input, offset): the output sits at input's offset + offset (0: in place)
    aliases: list[tuple[str, str, int]] = field(default_factory=list)
    order: str = "size"                                               # winning order
    live_bound: int = 0           # largest sum of live tensors (in-place pairs once)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# -- aliases: in-place and overlapping pairs ------------------------------------------------
def aliases(buffers: list[Buffer], candidates) -> list[tuple[str, str, int]]:
    """The (output, input, offset) candidates the plan may use: the input dies at the step
    that writes the output, the offset is aligned, and each output pairs with one input
    and each input with one output (earlier candidates win; a pair may come with several
    offsets).  Whether the kernel allows the offset is the caller's finding
    (``elementwise_inputs`` for 0, ``overlap_offsets`` otherwise)."""
    by_name = {b.name: b for b in buffers}
    pairs: list[tuple[str, str, int]] = []
    input_of: dict[str, str] = {}
    output_of: dict[str, str] = {}
    for out, inp, offset in candidates:
        o, i = by_name.get(out), by_name.get(inp)
        if (o is None or i is None or i.last != o.first or offset % ALIGN
                or input_of.get(out, inp) != inp or output_of.get(inp, out) != out
                or (out, inp, int(offset)) in pairs):
            continue
        pairs.append((out, inp, int(offset)))
        input_of[out] = inp
        output_of[inp] = out
    return pairs


def _footprint(in_bytes: int, out_bytes: int, offset: int) -> int:
    """Bytes spanned by an input and an output placed ``offset`` bytes above it (aligned sizes)."""
    return max(in_bytes, offset + out_bytes) - min(0, offset)


# -- placement ------------------------------------------------------------------------------
def _groups(buffers: list[Buffer], pairs) -> list[list[tuple[Buffer, int]]]:
    """Alias chains as lists of (member, offset from the chain's lowest byte)."""
    by_name = {b.name: b for b in buffers}
    rel: dict[str, dict[str, int]] = {b.name: {b.name: 0} for b in buffers}
    group_of = {b.name: b.name for b in buffers}
    for out, inp, offset in pairs:
        go, gi = group_of[out], group_of[inp]
        shift = rel[gi][inp] + offset - rel[go][out]      # move out's chain by shift
        for name, r in rel.pop(go).items():
            rel[gi][name] = r + shift
            group_of[name] = gi
    groups = []
    for members in rel.values():
        low = min(members.values())
        groups.append([(by_name[n], r - low) for n, r in members.items()])
    return groups


# ordering keys on a chain's (footprint, first step, last step, name) and the step where
# the live bytes peak; "peak" places from the peak outwards (its neighbours then fit
# around what the peak fixed)
ORDERS = {
    "size": lambda g, peak: (-g[0], g[1], g[3]),
    "lifetime": lambda g, peak: (-(g[2] - g[1]), -g[0], g[1], g[3]),
    "first": lambda g, peak: (g[1], -g[0], g[3]),
    "breadth": lambda g, peak: (-g[0] * (g[2] - g[1] + 1), g[1], g[3]),
    "peak": lambda g, peak: (max(g[1] - peak, peak - g[2], 0), -g[0], g[1], g[3]),
}


def _place(groups, key, peak: int) -> dict[str, int]:
    """Greedy: each chain (its members at their relative offsets) at the lowest aligned
    base where no member collides with an already placed buffer live at the same time."""
    def stats(group):
        return (max(r + _align(b.size) for b, r in group), min(b.first for b, _ in group),
                max(b.last for b, _ in group), min(b.name for b, _ in group))

    placed: list[tuple[Buffer, int]] = []
    offsets: dict[str, int] = {}
    for group in sorted(groups, key=lambda g: key(stats(g), peak)):
        busy = [(r, _align(b.size), off, off + _align(other.size)) for b, r in group
                for other, off in placed if other.overlaps_in_time(b)]
        top = max((end for *_, end in busy), default=0)       # above everything: free
        for base in sorted({0, top} | {max(0, end - r) for r, _, _, end in busy}):
            if all(end <= base + r or base + r + size <= start
                   for r, size, start, end in busy):
                break
        for b, r in group:
            placed.append((b, base + r))
            offsets[b.name] = base + r
    return offsets


def _best_placement(buffers, pairs) -> tuple[int, str, dict[str, int]]:
    groups = _groups(buffers, pairs)
    live = _live(buffers, pairs)
    peak = live.index(max(live)) if live else 0
    best = None
    for name, key in ORDERS.items():
        offsets = _place(groups, key, peak)
        arena = max((offsets[b.name] + _align(b.size) for b in buffers), default=0)
        if best is None or arena < best[0]:
            best = (arena, name, offsets)
    return best


def _live(buffers: list[Buffer], pairs) -> list[int]:
    """Bytes live at each step, an aliased pair counted as its footprint where it shares."""
    by_name = {b.name: b for b in buffers}
    live = [0] * (max((b.last for b in buffers), default=-1) + 1)
    for b in buffers:
        for step in range(b.first, b.last + 1):
            live[step] += _align(b.size)
    saving: dict[tuple[str, str], int] = {}      # a pair's best offset
    for out, inp, offset in pairs:
        o, i = by_name[out], by_name[inp]
        ai, ao = _align(i.size), _align(o.size)
        saved = ao + ai - _footprint(ai, ao, offset)
        saving[(out, inp)] = max(saving.get((out, inp), 0), saved)
    for (out, _), saved in saving.items():
        live[by_name[out].first] -= saved
    return live


def lower_bound(buffers: list[Buffer], pairs=()) -> int:
    """Largest sum of (aligned) live buffer sizes over all steps, where an aliased pair
    counts its footprint (not the sum of its sizes) at the step both are live."""
    return max(_live(buffers, pairs), default=0)


def plan(buffers: list[Buffer], pairs=()) -> Plan:
    """Smallest greedy placement.  A chain of aliased pairs is placed as one rigid block,
    so every pair used also ties the layout: pairs are taken where they pay, peak first --
    start with none, then each round add one allowed pair of the steps where the live
    bytes peak (or all of them, whichever places best), and keep the smallest arena seen
    (all pairs at once are tried too).  ``Plan.aliases`` are the pairs used;
    ``lower_bound`` counts them, ``live_bound`` only the allowed in-place pairs.
    Ties keep the earlier plan (no pairs, TFLite Micro's order first)."""
    pairs = list(pairs)
    if aliases(buffers, pairs) != pairs:
        raise ValueError("aliased pairs must come from aliases()")
    options: dict[tuple[str, str], list[int]] = {}
    for out, inp, offset in pairs:
        options.setdefault((out, inp), []).append(offset)
    step_of = {b.name: b.first for b in buffers}

    def extend(chosen: list, keys) -> list:
        """``chosen`` plus ``keys``, each at the allowed offset that keeps its chain
        shortest."""
        chosen = list(chosen)
        for key in keys:
            chosen.append(min(((*key, d) for d in options[key]),
                              key=lambda p: _chain_span(buffers, chosen + [p], key[0])))
        return chosen

    chosen: list = []
    best = (*_best_placement(buffers, chosen), chosen)
    while True:            # each round takes one more peak pair (or all of them)
        live = _live(buffers, chosen)
        peak = {s for s, v in enumerate(live) if v == max(live)}
        taken = {(out, inp) for out, inp, _ in chosen}
        more = [k for k in options if k not in taken and step_of[k[0]] in peak]
        if not more:
            break
        trials = [extend(chosen, [k]) for k in more] + ([extend(chosen, more)]
                                                          if len(more) > 1 else [])
        placed = [(*_best_placement(buffers, t), t) for t in trials]
        round_best = min(placed, key=lambda r: r[0])
        chosen = round_best[3]
        if round_best[0] < best[0]:
            best = round_best
    every = extend([], sorted(options, key=lambda k: step_of[k[0]]))
    trial = _best_placement(buffers, every)
    if trial[0] < best[0]:
        best = (*trial, every)
    arena, order, offsets, used = best
    sizes = {b.name: b.size for b in buffers}
    inplace = [(o, i, d) for o, i, d in pairs if d == 0 and sizes[o] == sizes[i]]
    return Plan(offsets, arena, lower_bound(buffers, used), used, order,
                lower_bound(buffers, inplace))


def refit(base: Plan, base_buffers: list[Buffer], buffers: list[Buffer]) -> Plan | None:
    """``base``'s placement kept for every buffer it placed with the same size and lifetime;
    each other buffer (a kernel's scratch whose size changed) put at the lowest offset free
    over its lifetime within ``base``'s arena; None when one does not fit there.  Nothing
    placed before moves, so no kernel reads or writes anywhere else than in ``base``."""
    before = {b.name: b for b in base_buffers}
    kept = [b for b in buffers if before.get(b.name) == b]
    offsets = {b.name: base.offsets[b.name] for b in kept}
    placed = list(kept)
    for b in (b for b in buffers if before.get(b.name) != b):
        busy = sorted((offsets[o.name], offsets[o.name] + _align(o.size))
                      for o in placed if o.overlaps_in_time(b))
        at = 0
        for lo, hi in busy:
            if at + b.size <= lo:
                break
            at = max(at, hi)
        if at + b.size > base.arena_bytes:
            return None
        offsets[b.name] = at
        placed.append(b)
    names = {b.name for b in buffers}
    used = [a for a in base.aliases if a[0] in names and a[1] in names]
    return Plan(offsets, base.arena_bytes, lower_bound(buffers, used), used, base.order,
                base.live_bound)


def _chain_span(buffers: list[Buffer], pairs, name: str) -> int:
    """Bytes the alias chain holding ``name`` spans."""
    group = next(g for g in _groups(buffers, pairs) if any(b.name == name for b, _ in g))
    return max(r + _align(b.size) for b, r in group)


def check(buffers: list[Buffer], p: Plan) -> None:
    """Raise AssertionError if two buffers live at the same time share a byte, unless they
    are a declared aliased pair exactly at its declared offset."""
    assert aliases(buffers, p.aliases) == list(p.aliases), "invalid aliased pair"
    declared = {(out, inp): offset for out, inp, offset in p.aliases}
    for i, a in enumerate(buffers):
        oa = p.offsets[a.name]
        assert oa % ALIGN == 0 and oa + a.size <= p.arena_bytes, f"{a.name} outside the arena"
        for b in buffers[i + 1:]:
            ob = p.offsets[b.name]
            if not (a.overlaps_in_time(b) and oa < ob + b.size and ob < oa + a.size):
                continue
            if (declared.get((a.name, b.name)) == oa - ob
                    or declared.get((b.name, a.name)) == ob - oa):
                continue
            raise AssertionError(f"{a.name} and {b.name} are live together and overlap")


# -- the in-place rule, on TIR ---------------------------------------------------------------
class _Refuse(Exception):
    """The walk met something it cannot follow exactly: no in-place for this kernel."""


def _kind(node) -> str:
    return type(node).__name__


_INT_BINOPS = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
    "FloorDiv": np.floor_divide, "FloorMod": np.mod, "Min": np.minimum, "Max": np.maximum,
    "EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal,
    "GT": np.greater, "GE": np.greater_equal, "And": np.logical_and, "Or": np.logical_or,
}


def _dtype(expr) -> str:
    ty = expr.ty
    return str(ty.dtype) if hasattr(ty, "dtype") else str(ty)


def _index(expr, env: dict, n: int) -> np.ndarray:
    """Evaluate an integer index/condition expression for all n output elements at once
    (``env``: block iteration variable -> values); anything data dependent refuses."""
    kind = _kind(expr)
    if kind == "IntImm":
        return np.full(n, int(expr.value), dtype=np.int64)
    if kind in ("Var", "SizeVar"):
        for var, values in env.items():
            if var.same_as(expr):
                return values
        raise _Refuse(f"free variable {expr}")
    if kind in _INT_BINOPS:
        return _INT_BINOPS[kind](_index(expr.a, env, n), _index(expr.b, env, n))
    if kind == "Not":
        return np.logical_not(_index(expr.a, env, n))
    if kind == "Cast" and _dtype(expr).startswith(("int", "bool")):
        return _index(expr.value, env, n)
    raise _Refuse(f"index expression {kind}")


def _condition(expr, env: dict, n: int):
    try:
        return _index(expr, env, n).astype(bool)
    except _Refuse:
        return None                      # data dependent: both branches may run


def _loads(expr, env: dict, mask: np.ndarray, out: list, ptrs: list | None = None) -> None:
    """Every buffer load in ``expr`` as (buffer, index arrays, mask of elements it serves);
    pointers passed to helpers (``tvm_access_ptr``) go to ``ptrs`` as (buffer name, start
    array, extent, rw mask, mask), or refuse when ``ptrs`` is None."""
    kind = _kind(expr)
    if kind == "Call" and str(expr.op.name).endswith(("tvm_access_ptr", "address_of")):
        if ptrs is None or not str(expr.op.name).endswith("tvm_access_ptr"):
            raise _Refuse("pointer into a buffer")
        _, data, offset, extent, rw = expr.args
        ptrs.append((_data_name(data), _index(offset, env, len(mask)), int(extent), int(rw),
                     mask))
        return
    if kind in ("TensorLoad", "BufferLoad"):
        source = expr.source if kind == "TensorLoad" else expr.buffer
        out.append((source, tuple(_index(i, env, len(mask)) for i in expr.indices), mask))
        return
    if kind in ("IntImm", "FloatImm", "StringImm", "Var", "SizeVar"):
        return
    if kind == "Call" and str(expr.op.name).endswith("if_then_else"):
        cond, then, other = expr.args
    elif kind == "Select":
        cond, then, other = expr.condition, expr.true_value, expr.false_value
    else:
        cond = None
    if cond is not None:
        c = _condition(cond, env, len(mask))
        _loads(cond, env, mask, out, ptrs)
        _loads(then, env, mask if c is None else mask & c, out, ptrs)
        _loads(other, env, mask if c is None else mask & ~c, out, ptrs)
        return
    if kind == "Call":
        for a in expr.args:
            _loads(a, env, mask, out, ptrs)
    elif kind in _INT_BINOPS or kind in ("Div", "Mod", "LShift", "RShift", "BitwiseAnd",
                                         "BitwiseOr", "BitwiseXor"):
        _loads(expr.a, env, mask, out, ptrs)
        _loads(expr.b, env, mask, out, ptrs)
    elif kind in ("Cast", "Not"):
        _loads(expr.value if kind == "Cast" else expr.a, env, mask, out, ptrs)
    else:
        raise _Refuse(f"expression {kind}")


def _writers(func) -> dict:
    """buffer -> the one block writing it (a spatial block storing at its own iter vars)."""
    writers: list[tuple[object, object]] = []

    def visit(stmt) -> None:
        kind = _kind(stmt)
        if kind == "SBlockRealize":
            visit(stmt.block)
        elif kind == "SBlock":
            if stmt.init is not None or stmt.match_buffers:
                raise _Refuse("reduction or matched buffer")
            if _kind(stmt.body) == "BufferStore":
                store = stmt.body
                ivs = [iv.var for iv in stmt.iter_vars]
                if (any(int(iv.iter_type) != 0 for iv in stmt.iter_vars)
                        or len(store.indices) != len(ivs)
                        or not all(i.same_as(v) for i, v in zip(store.indices, ivs))):
                    raise _Refuse(f"block {stmt.name_hint} does not write element-wise")
                writers.append((store.buffer, stmt))
            else:
                visit(stmt.body)
        elif kind == "SeqStmt":
            for s in stmt:
                visit(s)
        elif kind == "For":
            visit(stmt.body)
        else:
            raise _Refuse(f"statement {kind}")

    visit(func.body)
    found: dict = {}
    for buf, block in writers:
        if any(buf.same_as(b) for b in found):
            raise _Refuse(f"{buf.name} written by two blocks")
        found[buf] = block
    return found


def _state_key(buf, idx, mask) -> bytes:
    h = hashlib.sha1(str(buf.name).encode())
    for a in idx:
        h.update(np.where(mask, a, -1).tobytes())
    h.update(mask.tobytes())
    return h.digest()


def elementwise_inputs(func) -> tuple[int, ...]:
    """Indices of ``func``'s parameters the last parameter (the output) may overwrite in
    place: same shape and dtype, and output[i] reads only element i of them (module doc).
    ``func`` is a fused (unscheduled) s_tir PrimFunc with the output as last parameter."""
    params = list(func.params)
    if len(params) < 2:
        return ()
    out = params[-1]
    shape = tuple(int(d) for d in out.shape)
    n = int(np.prod(shape, dtype=np.int64))
    try:
        writers = _writers(func)
        if sum(1 for b in writers if b.same_as(out)) != 1:
            return ()
        ys = tuple(a.reshape(-1).astype(np.int64) for a in np.indices(shape))
        todo = [(out, ys, np.ones(n, dtype=bool))]
        seen: set[bytes] = set()
        reads: dict[int, list] = {}
        while todo:
            buf, idx, mask = todo.pop()
            key = _state_key(buf, idx, mask)
            if key in seen:
                continue
            seen.add(key)
            if len(seen) > MAX_WALK_STATES:
                raise _Refuse("too many paths")
            block = next(blk for b, blk in writers.items() if b.same_as(buf))
            env = {iv.var: values for iv, values in zip(block.iter_vars, idx)}
            loads: list = []
            _loads(block.body.value, env, mask, loads)
            for source, lidx, lmask in loads:
                if source.same_as(out):
                    raise _Refuse("the output is read")
                pos = next((k for k, p in enumerate(params[:-1]) if p.same_as(source)), None)
                if pos is not None:
                    reads.setdefault(pos, []).append((lidx, lmask))
                elif any(b.same_as(source) for b in writers):
                    todo.append((source, lidx, lmask))
                else:
                    raise _Refuse(f"{source.name} has no writer")
    except _Refuse:
        return ()
    ok = []
    for pos, rs in sorted(reads.items()):
        p = params[pos]
        if tuple(int(d) for d in p.shape) != shape or str(p.dtype) != str(out.dtype):
            continue
        if all(np.array_equal(a[m], y[m]) for lidx, m in rs for a, y in zip(lidx, ys)):
            ok.append(pos)
    return tuple(ok)


# -- overlap: the output written over the part of a dying input already read ---------------
def _span(stmt) -> int:
    """Time slots of one execution of ``stmt`` (a leaf statement takes two: reads, write)."""
    kind = _kind(stmt)
    if kind == "SeqStmt":
        return sum(_span(s) for s in stmt)
    if kind == "For":
        return int(stmt.extent) * _span(stmt.body)
    if kind == "IfThenElse":
        return 1 + _span(stmt.then_case) + (_span(stmt.else_case) if stmt.else_case else 0)
    if kind == "AttrStmt":
        return _span(stmt.body)
    if kind in ("AllocBuffer", "DeclBuffer"):
        return 0
    return 2


def _data_name(data) -> str:
    if _kind(data) == "Call" and str(data.op.name).endswith("buffer_data"):
        data = data.args[0]
    return str(data.name)


class _Trace:
    """Walks a lowered kernel for all loop iterations at once (numpy arrays over the
    iteration instances) and records when each byte of x is read and of y written."""

    def __init__(self, x, y):
        self.x, self.y = str(x.name), str(y.name)
        self.xsize = np.dtype(str(x.dtype)).itemsize
        self.ysize = np.dtype(str(y.dtype)).itemsize
        self.last_read = np.full(_nbytes(x), -1, dtype=np.int64)
        self.first_write = np.full(_nbytes(y), np.iinfo(np.int64).max, dtype=np.int64)

    def _bytes(self, start, count: int, item: int, limit: int, times, mask):
        starts, times = (start * item)[mask], times[mask]
        idx = (starts[:, None] + np.arange(count * item)[None, :]).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= limit):
            raise _Refuse("access outside the buffer")
        return idx, np.repeat(times, count * item)

    def access(self, name: str, start, count: int, times, mask, write: bool) -> None:
        if name == self.x:
            if write:
                raise _Refuse("the kernel writes its input")
            idx, t = self._bytes(start, count, self.xsize, len(self.last_read), times, mask)
            np.maximum.at(self.last_read, idx, t)
        elif name == self.y and write:
            idx, t = self._bytes(start, count, self.ysize, len(self.first_write), times, mask)
            np.minimum.at(self.first_write, idx, t)

    def expr_reads(self, expr, env, mask, times) -> None:
        """Loads in ``expr`` and helper calls' pointer accesses, all at ``times`` (a
        helper's write then counts as simultaneous with its reads: unsafe)."""
        loads: list = []
        ptrs: list = []
        _loads(expr, env, mask, loads, ptrs)
        for source, idx, lmask in loads:
            if str(source.name) in (self.x, self.y):
                if len(idx) != 1:
                    raise _Refuse("multi-dimensional access after flattening")
                self.access(str(source.name), idx[0], 1, times, lmask, False)
        for name, start, extent, rw, pmask in ptrs:
            if rw & 1:
                self.access(name, start, extent, times, pmask, False)
            if rw & 2:
                self.access(name, start, extent, times, pmask, True)

    def walk(self, stmt, env: dict, mask, t0) -> None:
        kind = _kind(stmt)
        n = len(mask)
        if kind == "SeqStmt":
            t = t0
            for s in stmt:
                self.walk(s, env, mask, t)
                t = t + _span(s)
        elif kind == "For":
            ext, lo, body = int(stmt.extent), int(stmt.min), stmt.body
            k = np.arange(ext, dtype=np.int64)
            inner = {v: np.repeat(a, ext) for v, a in env.items()}
            inner[stmt.loop_var] = np.tile(k + lo, n)
            self.walk(body, inner, np.repeat(mask, ext),
                      np.repeat(t0, ext) + np.tile(k, n) * _span(body))
        elif kind == "Bind":
            self.expr_reads(stmt.value, env, mask, t0)
            try:
                env[stmt.var] = _index(stmt.value, env, n)
            except _Refuse:
                pass                      # a data value: refused later if used as an index
        elif kind == "BufferStore":
            self.expr_reads(stmt.value, env, mask, t0)
            name = str(stmt.buffer.name)
            if name in (self.x, self.y):
                if len(stmt.indices) != 1:
                    raise _Refuse("multi-dimensional store after flattening")
                self.access(name, _index(stmt.indices[0], env, n), 1, t0 + 1, mask, True)
        elif kind == "Evaluate":
            self.expr_reads(stmt.value, env, mask, t0)
        elif kind == "IfThenElse":
            self.expr_reads(stmt.condition, env, mask, t0)
            c = _condition(stmt.condition, env, n)
            self.walk(stmt.then_case, env, mask if c is None else mask & c, t0 + 1)
            if stmt.else_case is not None:
                self.walk(stmt.else_case, env, mask if c is None else mask & ~c,
                          t0 + 1 + _span(stmt.then_case))
        elif kind == "AttrStmt":
            self.walk(stmt.body, env, mask, t0)
        elif kind not in ("AllocBuffer", "DeclBuffer"):
            raise _Refuse(f"statement {kind}")


def _nbytes(buf) -> int:
    return int(np.prod([int(d) for d in buf.shape], dtype=np.int64)) * \
        np.dtype(str(buf.dtype)).itemsize


def access_times(func, x: int, y: int):
    """(last read time of every byte of parameter ``x``, first write time of every byte of
    parameter ``y``) in the program order of the lowered, flattened kernel ``func``; None
    when the walk cannot follow the kernel exactly (a data-dependent index, a statement
    it does not know).  Conditions it cannot evaluate count both branches, which only
    makes reads later and writes earlier."""
    params = list(func.params)
    trace = _Trace(params[x], params[y])
    try:
        trace.walk(func.body, {}, np.ones(1, dtype=bool), np.zeros(1, dtype=np.int64))
    except _Refuse:
        return None
    return trace.last_read, trace.first_write


def overlap_offsets(last_read: np.ndarray, first_write: np.ndarray) -> tuple[int, ...]:
    """Aligned offsets d (output base - input base) at which no output byte is written
    before the last read of the input byte under it (``first_write[i - d] > last_read[i]``
    wherever both exist): the smallest-footprint one with the output starting below the
    input (d <= 0) and the one with it starting above (d >= 0), best first; empty when
    only disjoint placements are safe."""
    sx, sy = len(last_read), len(first_write)
    ax, ay = _align(sx), _align(sy)

    def footprint(d: int) -> int:
        return _footprint(ax, ay, d)

    found = []
    for side in (range(0, -ay, -ALIGN), range(0, ax, ALIGN)):
        for d in sorted(side, key=lambda d: (footprint(d), abs(d))):
            if footprint(d) >= ax + ay:
                break
            lo, hi = max(0, d), min(sx, d + sy)
            if np.all(first_write[lo - d:hi - d] > last_read[lo:hi]):
                found.append(d)
                break
    return tuple(sorted(set(found), key=lambda d: (footprint(d), abs(d))))
