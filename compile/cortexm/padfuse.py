"""Relax pass: fold an explicit ``pad`` kernel into the fused group that consumes it.

The integer lowering pads with the input zero point before each convolution
(``call_tir(pad, x)`` then the conv group).  ``FuseOps`` never fuses an injective producer
into a convolution, so the padded copy would be a separate activation living next to its
source -- more arena than TFLite Micro, which pads on the fly.  This pass runs between
``FuseOps`` and ``FuseTIR``: when a pad's only consumer is a ``Primitive`` group, the pad
becomes that group's first binding (and the group takes the unpadded tensor); ``FuseTIR``
then merges it and ``lower.schedule_kernel`` inlines it into the convolution's reads.

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


def _pad_group(mod, pad_binding, group_fn, index: int, name: str):
    """New Primitive function: group_fn with parameter ``index`` computed by the pad."""
    src = pad_binding.value.args[1].fields[0]
    x = relax.Var("pad_in", src.ty)
    params = [x] + [p for j, p in enumerate(group_fn.params) if j != index]
    bb = relax.BlockBuilder()
    with bb.function(name, params, attrs={"Primitive": True}, private=True):
        with bb.dataflow():
            padded = bb.emit(relax.call_tir(pad_binding.value.args[0], relax.Tuple([x]),
                                            pad_binding.var.ty))
            vmap = {_key(group_fn.params[index]): padded}
            inner = list(group_fn.body.blocks[0].bindings)
            out = None
            for k, b in enumerate(inner):
                call = relax.call_tir(b.value.args[0], relax.Tuple(
                    [vmap.get(_key(a), a) for a in b.value.args[1].fields]), b.var.ty)
                if k == len(inner) - 1:
                    out = bb.emit_output(call)
                else:
                    vmap[_key(b.var)] = bb.emit(call)
        bb.emit_func_output(out)
    return bb.get()[name]


def fold_pads(mod: tvm.IRModule) -> tvm.IRModule:
    main = mod["main"]
    if len(main.body.blocks) != 1:
        return mod
    bindings = list(main.body.blocks[0].bindings)
    uses: dict[int, int] = {_key(main.body.body): 1}
    for b in bindings:
        args = _args(b.value)
        if args is None:
            return mod
        for a in args:
            uses[_key(a)] = uses.get(_key(a), 0) + 1
    pads = {}
    for b in bindings:
        v = b.value
        if (_is_call_tir(v) and len(v.args[1].fields) == 1 and uses.get(_key(b.var)) == 1
                and int(mod[v.args[0]].attrs.get("op_pattern", 99)) <= INJECTIVE
                and "pad" in v.args[0].name_hint):
            pads[_key(b.var)] = b
    groups, folded = {}, set()
    for b in bindings:
        v = b.value
        if not (_is(v, "Call") and _is(v.op, "GlobalVar")):
            continue
        fn = mod[v.op]
        hits = [i for i, a in enumerate(v.args) if _key(a) in pads]
        if (not hits or not _is(fn, "Function") or not fn.attrs.get("Primitive", False)
                or len(fn.body.blocks) != 1
                or not all(_is_call_tir(x.value) for x in fn.body.blocks[0].bindings)):
            continue
        pad = pads[_key(v.args[hits[0]])]
        name = f"{v.op.name_hint}_padded"
        groups[_key(b.var)] = (_pad_group(mod, pad, fn, hits[0], name), hits[0],
                               pad.value.args[1].fields[0], name)
        folded.add(_key(pad.var))
    if not groups:
        return mod
    bb = relax.BlockBuilder(mod)
    added = {k: (bb.add_func(fn, name), i, src) for k, (fn, i, src, name) in groups.items()}
    attrs = {k: main.attrs[k] for k in main.attrs.keys() if k != "global_symbol"}
    with bb.function("sg_main_padded", list(main.params), attrs=attrs):
        with bb.dataflow():
            vmap, out = {}, None
            for b in bindings:
                if _key(b.var) in folded:
                    continue
                v = b.value
                sub = [vmap.get(_key(a), a) for a in _args(v)]
                if _key(b.var) in added:
                    gv, i, src = added[_key(b.var)]
                    call = relax.Call(gv, [vmap.get(_key(src), src)]
                                      + [a for j, a in enumerate(sub) if j != i])
                elif _is_call_tir(v):
                    call = relax.call_tir(v.args[0], relax.Tuple(sub), b.var.ty)
                else:
                    call = relax.Call(v.op, sub)
                if _key(b.var) == _key(main.body.body):
                    out = bb.emit_output(call)
                else:
                    vmap[_key(b.var)] = bb.emit(call)
        bb.emit_func_output(out)
    built = bb.get()
    temp = built.get_global_var("sg_main_padded")
    funcs = {gv: fn for gv, fn in built.functions.items() if not gv.same_as(temp)}
    funcs[mod.get_global_var("main")] = built[temp].with_attr("global_symbol", "main")
    return tvm.IRModule(funcs, attrs=mod.attrs)


@tvm.transform.module_pass(opt_level=0, name="FoldPadIntoConsumer")
def FoldPadIntoConsumer(mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: N802 (TVM style)
    return fold_pads(mod)
