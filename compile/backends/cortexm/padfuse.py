"""Relax pass: move every explicit ``pad`` kernel into the fused group that consumes it.

The integer lowering pads with the input zero point before each convolution
(``call_tir(pad, x)`` then the conv group).  A padded copy that lives as its own activation
costs arena bytes TFLite Micro does not spend (it pads on the fly), and ``FuseOps`` puts a
pad in one of two wrong places:

1. alone, between its producer and the convolution (``FuseOps`` never fuses an injective
   producer into a convolution);
2. at the END of its producer's group (``AnnotateTIROpPattern`` calls a pad element-wise,
   so it fuses as an epilogue): the producer then writes the padded tensor, e.g. 33x33x32
   instead of 32x32x32 before a stride-2 depthwise conv, the peak of MobileNeXt-mcu.

This pass runs between ``FuseOps`` and ``FuseTIR``.  First a trailing pad is split off its
producer group when the padded tensor's only consumer is a ``Primitive`` group (case 2
becomes case 1); then a pad whose only consumer is such a group becomes that group's first
binding (the group takes the unpadded tensor).  ``FuseTIR`` merges it and
``lower.schedule_kernel`` inlines it into the convolution's reads.

Pure ``IRModule -> IRModule``; a ``main`` in any other shape is returned unchanged.
"""
from __future__ import annotations

import tvm
from tvm import relax

CALL_TIR = "relax.call_tir"
INJECTIVE = 2          # op_pattern of a PrimFunc: 0 elem-wise, 1 broadcast, 2 injective


def _is(expr, *kinds: str) -> bool:
    return type(expr).__name__ in kinds


def _is_call_tir(value) -> bool:
    return _is(value, "Call") and value.op.same_as(tvm.ir.Op.get(CALL_TIR))


def _args(value) -> list | None:
    if _is_call_tir(value):
        return list(value.args[1].fields)
    if _is(value, "Call") and _is(value.op, "GlobalVar"):
        return list(value.args)
    return None


def _key(expr) -> int:
    return expr.__hash__()


def _is_pad(mod, value) -> bool:
    """``call_tir`` of a one-input injective PrimFunc named pad*."""
    return (_is_call_tir(value) and len(value.args[1].fields) == 1
            and int(mod[value.args[0]].attrs.get("op_pattern", 99)) <= INJECTIVE
            and "pad" in value.args[0].name_hint)


def _group_of(mod, value):
    """The Primitive function ``value`` calls when it is a group of call_tir, else None."""
    if not (_is(value, "Call") and _is(value.op, "GlobalVar")):
        return None
    fn = mod[value.op]
    if (not _is(fn, "Function") or not fn.attrs.get("Primitive", False)
            or len(fn.body.blocks) != 1
            or not all(_is_call_tir(x.value) for x in fn.body.blocks[0].bindings)):
        return None
    return fn


def _primitive(name: str, params: list, calls: list, vmap: dict):
    """A Primitive function over ``params`` running ``calls`` (call_tir bindings of another
    group) in order; ``vmap`` maps the old vars their arguments use to new expressions.
    Returns the last call's result."""
    bb = relax.BlockBuilder()
    vmap = dict(vmap)
    with bb.function(name, params, attrs={"Primitive": True}, private=True):
        with bb.dataflow():
            out = None
            for k, (var, value) in enumerate(calls):
                call = relax.call_tir(value.args[0], relax.Tuple(
                    [vmap.get(_key(a), a) for a in value.args[1].fields]), var.ty)
                out = bb.emit_output(call) if k == len(calls) - 1 else bb.emit(call)
                vmap[_key(var)] = out
        bb.emit_func_output(out)
    return bb.get()[name]


def _rebuild_main(mod, rewrite) -> tvm.IRModule:
    """``main`` rebuilt binding by binding; ``rewrite(bb, binding, args)`` emits the binding's
    replacement (args already substituted) and returns the expression now bound to it, or
    None to keep the binding as it is."""
    main = mod["main"]
    bindings = list(main.body.blocks[0].bindings)
    bb = relax.BlockBuilder(mod)
    attrs = {k: main.attrs[k] for k in main.attrs.keys() if k != "global_symbol"}
    with bb.function("sg_main_rebuilt", list(main.params), attrs=attrs):
        with bb.dataflow():
            vmap, out = {}, None
            for b in bindings:
                v = b.value
                sub = [vmap.get(_key(a), a) for a in _args(v)]
                is_out = _key(b.var) == _key(main.body.body)
                new = rewrite(bb, b, sub, is_out)
                if new is None:
                    call = (relax.call_tir(v.args[0], relax.Tuple(sub), b.var.ty)
                            if _is_call_tir(v) else relax.Call(v.op, sub))
                    new = bb.emit_output(call) if is_out else bb.emit(call)
                if is_out:
                    out = new
                vmap[_key(b.var)] = new
        bb.emit_func_output(out)
    built = bb.get()
    temp = built.get_global_var("sg_main_rebuilt")
    funcs = {gv: fn for gv, fn in built.functions.items() if not gv.same_as(temp)}
    funcs[mod.get_global_var("main")] = built[temp].with_attr("global_symbol", "main")
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _uses(main) -> dict[int, int] | None:
    """How often each var is used in ``main`` (None: main is not a plain call sequence)."""
    if len(main.body.blocks) != 1:
        return None
    uses: dict[int, int] = {_key(main.body.body): 1}
    for b in main.body.blocks[0].bindings:
        args = _args(b.value)
        if args is None:
            return None
        for a in args:
            uses[_key(a)] = uses.get(_key(a), 0) + 1
    return uses


def split_trailing_pads(mod: tvm.IRModule) -> tvm.IRModule:
    """Case 2 -> case 1: a group ending in a pad whose result only a Primitive group reads
    becomes the group without the pad, then the pad as its own ``call_tir``."""
    main = mod["main"]
    uses = _uses(main)
    if uses is None:
        return mod
    bindings = list(main.body.blocks[0].bindings)
    consumed_by_group = {_key(a) for b in bindings if _group_of(mod, b.value) is not None
                         for a in b.value.args}
    split, heads = {}, {}
    for b in bindings:
        fn = _group_of(mod, b.value)
        if fn is None or uses.get(_key(b.var)) != 1 or _key(b.var) not in consumed_by_group:
            continue
        inner = list(fn.body.blocks[0].bindings)
        if (len(inner) < 2 or not _is_pad(mod, inner[-1].value)
                or _key(inner[-1].value.args[1].fields[0]) != _key(inner[-2].var)):
            continue
        name = f"{b.value.op.name_hint}_unpadded"
        if name not in heads:
            heads[name] = _primitive(name, list(fn.params),
                                     [(x.var, x.value) for x in inner[:-1]], {})
        split[_key(b.var)] = (name, inner[-1].value.args[0])
    if not split:
        return mod
    added = {}

    def rewrite(bb, b, args, is_out):
        if _key(b.var) not in split:
            return None
        name, pad = split[_key(b.var)]
        if name not in added:
            added[name] = bb.add_func(heads[name], name)
        unpadded = bb.emit(relax.Call(added[name], args))
        call = relax.call_tir(pad, relax.Tuple([unpadded]), b.var.ty)
        return bb.emit_output(call) if is_out else bb.emit(call)

    return _rebuild_main(mod, rewrite)


def fold_pads(mod: tvm.IRModule) -> tvm.IRModule:
    """Case 1: a pad read only by a Primitive group moves to the head of that group."""
    main = mod["main"]
    uses = _uses(main)
    if uses is None:
        return mod
    bindings = list(main.body.blocks[0].bindings)
    pads = {_key(b.var): b for b in bindings
            if _is_pad(mod, b.value) and uses.get(_key(b.var)) == 1}
    groups, made, folded = {}, {}, set()
    for b in bindings:
        fn = _group_of(mod, b.value)
        hits = [i for i, a in enumerate(b.value.args) if _key(a) in pads] if fn else []
        if not hits:
            continue
        index, pad = hits[0], pads[_key(b.value.args[hits[0]])]
        name = f"{b.value.op.name_hint}_padded"
        if (name, pad.value.args[0].name_hint, index) not in made:
            src = pad.value.args[1].fields[0]
            x = relax.Var("pad_in", src.ty)
            params = [x] + [p for j, p in enumerate(fn.params) if j != index]
            calls = [(fn.params[index], pad.value)] + [(y.var, y.value)
                                                       for y in fn.body.blocks[0].bindings]
            made[(name, pad.value.args[0].name_hint, index)] = _primitive(
                name, params, calls, {_key(src): x})
        groups[_key(b.var)] = (made[(name, pad.value.args[0].name_hint, index)], index, name)
        folded.add(_key(pad.var))
    if not groups:
        return mod
    added = {}

    def rewrite(bb, b, args, is_out):
        if _key(b.var) in folded:          # emitted inside its consumer: stands for its input
            return args[0]
        if _key(b.var) not in groups:
            return None
        fn, index, name = groups[_key(b.var)]
        if _key(fn) not in added:
            added[_key(fn)] = bb.add_func(fn, name)
        call = relax.Call(added[_key(fn)], [args[index]]
                          + [a for j, a in enumerate(args) if j != index])
        return bb.emit_output(call) if is_out else bb.emit(call)

    return _rebuild_main(mod, rewrite)


@tvm.transform.module_pass(opt_level=0, name="FoldPadIntoConsumer")
def FoldPadIntoConsumer(mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: N802 (TVM style)
    return fold_pads(split_trailing_pads(mod))
