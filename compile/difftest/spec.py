"""Model specs: small int8 TFLite models as JSON data, their shapes, random ones, smaller ones.

A spec is a plain dict (JSON as it is)::

    {"input": [H, W, C], "float_io": false, "per_channel": true, "seed": 7,
     "layers": [{"op": "conv", "in": [0], "filters": 4, "kernel": [3, 3], "strides": [1, 1],
                 "padding": "valid", "dilation": 1, "act": "relu"}, ...]}

Node 0 is the model input, layer i makes node i + 1, the last node is the output.  A node
is spatial ``[H, W, C]`` or flat ``[N]``.  ``shapes`` checks a spec the way Keras would and
raises ``InvalidSpec``; ``random_spec`` draws valid specs over the operators the compiler
supports (``compile.frontend.SUPPORTED_OPS``) and their parameters; ``smaller`` lists the
specs one simplification away, for shrinking a failing model.
"""
from __future__ import annotations

import copy
import json
import random

ACTS = ("none", "relu", "relu6")
# op -> how often random_spec draws it
WEIGHTS = {"conv": 6, "depthwise": 5, "add": 3, "sub": 1, "mul": 1, "concat": 2,
           "avg_pool": 2, "max_pool": 2, "pad": 1, "slice": 1, "split": 1, "reshape": 1,
           "mean": 1, "dense": 2}
BINARY = ("add", "sub", "mul")


class InvalidSpec(ValueError):
    """The spec does not describe a model Keras can build."""


def _out_len(size: int, kernel: int, stride: int, padding: str, dilation: int = 1) -> int:
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        return -(-size // stride)
    if size < span:
        raise InvalidSpec(f"window {span} larger than the input {size}")
    return (size - span) // stride + 1


def layer_shape(layer: dict, ins: list[list[int]]) -> list[int]:
    """Output shape of one layer from its input shapes (InvalidSpec when Keras would refuse)."""
    op = layer["op"]
    a = ins[0]
    spatial = len(a) == 3
    if op in ("conv", "depthwise", "avg_pool", "max_pool", "pad", "slice", "split", "reshape",
              "mean") and not spatial:
        raise InvalidSpec(f"{op} needs a spatial input")
    if op in ("conv", "depthwise"):
        kh, kw = layer["kernel"]
        sh, sw = layer["strides"]
        d = layer.get("dilation", 1)
        if d > 1 and (sh, sw) != (1, 1):
            raise InvalidSpec("dilation with strides")
        h = _out_len(a[0], kh, sh, layer["padding"], d)
        w = _out_len(a[1], kw, sw, layer["padding"], d)
        c = layer["filters"] if op == "conv" else a[2] * layer["multiplier"]
        return [h, w, c]
    if op in ("avg_pool", "max_pool"):
        ph, pw = layer["pool"]
        sh, sw = layer["strides"]
        return [_out_len(a[0], ph, sh, layer["padding"]), _out_len(a[1], pw, sw, layer["padding"]),
                a[2]]
    if op in BINARY:
        if ins[0] != ins[1]:
            raise InvalidSpec(f"{op} of shapes {ins[0]} and {ins[1]}")
        return list(a)
    if op == "concat":
        if len(ins[0]) != len(ins[1]) or ins[0][:-1] != ins[1][:-1]:
            raise InvalidSpec(f"concat of shapes {ins[0]} and {ins[1]}")
        return [*a[:-1], ins[0][-1] + ins[1][-1]]
    if op == "pad":
        (t, b), (left, r) = layer["pads"]
        return [a[0] + t + b, a[1] + left + r, a[2]]
    if op == "slice":
        out = []
        for size, begin, step in zip(a, layer["begin"], layer["step"]):
            if begin >= size:
                raise InvalidSpec("slice begins past the end")
            out.append(len(range(begin, size, step)))
        return out
    if op == "split":
        if a[2] % layer["parts"]:
            raise InvalidSpec(f"split of {a[2]} channels into {layer['parts']}")
        if layer["take"] >= layer["parts"]:
            raise InvalidSpec("split part out of range")
        return [a[0], a[1], a[2] // layer["parts"]]
    if op == "reshape":            # the same elements as [W, H, C]
        return [a[1], a[0], a[2]]
    if op == "mean":
        return [1, 1, a[2]] if layer["keepdims"] else [a[2]]
    if op == "dense":
        return [layer["units"]]
    if op == "softmax":
        if spatial:
            raise InvalidSpec("softmax needs a flat input")
        return list(a)
    raise InvalidSpec(f"unknown op {op!r}")


def shapes(spec: dict) -> list[list[int]]:
    """Shape of every node (node 0 the input); InvalidSpec if the spec is not buildable."""
    h, w, c = spec["input"]
    if min(h, w, c) < 1:
        raise InvalidSpec("empty input")
    out = [[h, w, c]]
    for i, layer in enumerate(spec["layers"]):
        if any(not 0 <= j <= i for j in layer["in"]):
            raise InvalidSpec(f"layer {i} reads a later node")
        shape = layer_shape(layer, [out[j] for j in layer["in"]])
        if min(shape) < 1:
            raise InvalidSpec(f"layer {i} gives an empty tensor")
        out.append(shape)
    if not spec["layers"]:
        raise InvalidSpec("no layers")
    return out


_ABBREV = {"filters": "f", "units": "u", "kernel": "k", "strides": "s", "dilation": "d",
           "multiplier": "m", "pool": "p", "pads": "pad", "begin": "b", "step": "st",
           "parts": "parts", "take": "take", "keepdims": "keep"}


def describe(spec: dict) -> str:
    """One line: input, then each node's op and parameters (``@n`` names its inputs when
    they are not the node before)."""
    parts = []
    for i, layer in enumerate(spec["layers"]):
        words = [_ABBREV[k] if v is True else f"{_ABBREV[k]}{_short(v)}"
                 for k, v in layer.items() if k in _ABBREV and v is not False
                 and (v is True or v not in (1, [1, 1]))]
        words += [layer[k] for k in ("padding", "act") if k in layer and layer[k] != "none"]
        if layer["in"] != [i]:
            words.insert(0, "@" + ",".join(map(str, layer["in"])))
        parts.append(f"{i + 1}:{layer['op']}" + (f"({' '.join(words)})" if words else ""))
    io = "float" if spec["float_io"] else "int8"
    pc = "per-channel" if spec["per_channel"] else "per-tensor"
    return f"{'x'.join(map(str, spec['input']))} {io} {pc}: " + " ".join(parts)


def _short(v) -> str:
    return "x".join(map(_short, v)) if isinstance(v, list) else str(v)


# -- random specs --------------------------------------------------------------------------
def _conv_params(rng: random.Random, shape: list[int], depthwise: bool) -> dict:
    k = rng.choice([1, 1, 3, 3, 3, 5, 2]) if not depthwise else rng.choice([3, 3, 3, 5, 2, 1])
    kernel = [k, k] if rng.random() < 0.85 else [k, rng.choice([1, 3])]
    dilation = 2 if rng.random() < 0.12 and max(kernel) > 1 else 1
    stride = 1 if dilation > 1 or rng.random() < 0.65 else 2
    strides = [stride, stride] if rng.random() < 0.9 else [1, 2]
    p = {"kernel": kernel, "strides": strides, "padding": rng.choice(["same", "valid"]),
         "dilation": dilation, "act": rng.choice(ACTS)}
    if depthwise:
        p["multiplier"] = 1 if rng.random() < 0.8 else 2
    else:
        p["filters"] = rng.choice([1, 2, 3, 4, 5, 8, 8, 12, 16, 16, 24])
    return p


def _draw_layer(rng: random.Random, spec: dict, node_shapes: list[list[int]]) -> list[dict]:
    """One op (plus the branch a binary op or concat needs), reading recent nodes."""
    n = len(node_shapes) - 1
    last = n if rng.random() < 0.75 else rng.randint(0, n)
    shape = node_shapes[last]
    ops = list(WEIGHTS)
    op = rng.choices(ops, [WEIGHTS[o] for o in ops])[0]
    if len(shape) == 1:              # flat: only dense, binary ops, concat (softmax at the end)
        op = rng.choice(["dense", "dense", "add", "mul", "concat"])
    if op in ("conv", "depthwise"):
        return [{"op": op, "in": [last], **_conv_params(rng, shape, op == "depthwise")}]
    if op in ("avg_pool", "max_pool"):
        k = rng.choice([2, 3])
        s = rng.choice([1, 2, 2])
        return [{"op": op, "in": [last], "pool": [k, k], "strides": [s, s],
                 "padding": rng.choice(["same", "valid"])}]
    if op in BINARY or op == "concat":
        # another node of a compatible shape, else a branch made for it
        same = [j for j, s in enumerate(node_shapes) if j != last and (
            s == shape if op != "concat" else len(s) == len(shape) and s[:-1] == shape[:-1])]
        layers = []
        if same and rng.random() < 0.5:
            other = rng.choice(same)
        else:
            src = rng.choice([j for j, s in enumerate(node_shapes)
                              if len(s) == len(shape) and s[:-1] == shape[:-1]])
            channels = shape[-1] if op != "concat" else rng.choice([1, 3, 4, 8])
            if len(shape) == 3:
                k = rng.choice([1, 3])
                layers.append({"op": "conv", "in": [src], "filters": channels, "kernel": [k, k],
                               "strides": [1, 1], "padding": "same", "dilation": 1,
                               "act": rng.choice(ACTS)})
            else:
                layers.append({"op": "dense", "in": [src], "units": channels,
                               "act": rng.choice(ACTS)})
            other = n + 1
        pair = [last, other] if rng.random() < 0.5 else [other, last]
        layer = {"op": op, "in": pair}
        if op in BINARY:
            layer["act"] = rng.choice(ACTS) if op == "add" else "none"
        return layers + [layer]
    if op == "pad":
        return [{"op": "pad", "in": [last],
                 "pads": [[rng.randint(0, 2), rng.randint(0, 2)], [rng.randint(0, 2),
                                                                   rng.randint(0, 2)]]}]
    if op == "slice":
        return [{"op": "slice", "in": [last],
                 "begin": [rng.randint(0, min(1, s - 1)) for s in shape],
                 "step": [rng.choice([1, 1, 2]), rng.choice([1, 1, 2]), 1]}]
    if op == "split":
        parts = next((p for p in (2, 3) if shape[2] % p == 0), 0)
        if parts:
            return [{"op": "split", "in": [last], "parts": parts, "take": rng.randrange(parts)}]
        return [{"op": "reshape", "in": [last]}]
    if op == "reshape":
        return [{"op": "reshape", "in": [last]}]
    if op == "mean":
        return [{"op": "mean", "in": [last], "keepdims": rng.random() < 0.4}]
    return [{"op": "dense", "in": [last], "units": rng.choice([1, 3, 5, 10, 16]),
             "act": rng.choice(ACTS)}]


def random_spec(seed: int, max_layers: int = 6) -> dict:
    """A valid spec drawn from ``seed`` (the same seed gives the same spec)."""
    rng = random.Random(seed)
    for _ in range(1000):
        spec = {"input": [rng.randint(1, 12), rng.randint(1, 12), rng.choice([1, 2, 3, 4, 5, 8,
                                                                              16])],
                "float_io": rng.random() < 0.15, "per_channel": rng.random() < 0.8,
                "seed": seed, "layers": []}
        if rng.random() < 0.7:       # mostly image-like sizes
            side = rng.randint(3, 12)
            spec["input"][:2] = [side, side if rng.random() < 0.7 else rng.randint(3, 12)]
        target = rng.choice([1, 1, 2, 3, 4, 5, 6, max_layers])
        node_shapes = shapes({**spec, "layers": [{"op": "reshape", "in": [0]}]})[:1]
        while len(spec["layers"]) < target:
            trial = copy.deepcopy(spec)
            trial["layers"] += _draw_layer(rng, spec, node_shapes)
            try:
                node_shapes = shapes(trial)
            except InvalidSpec:
                continue
            if max(_size(s) for s in node_shapes) > 4096:
                continue
            spec = trial
        if not spec["layers"]:
            continue
        if len(node_shapes[-1]) == 1 and rng.random() < 0.3:
            spec["layers"].append({"op": "softmax", "in": [len(node_shapes) - 1]})
        shapes(spec)
        return spec
    raise AssertionError("no valid spec drawn")


def _size(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


# -- shrinking -----------------------------------------------------------------------------
def used_prefix(spec: dict, end: int) -> dict:
    """The spec whose output is node ``end``, keeping only the layers it needs."""
    layers = spec["layers"][:end]
    needed = {end}
    for i in range(end - 1, -1, -1):
        if i + 1 in needed:
            needed.update(layers[i]["in"])
    keep = [i for i in range(end) if i + 1 in needed]
    renumber = {0: 0, **{i + 1: k + 1 for k, i in enumerate(keep)}}
    out = [{**layers[i], "in": [renumber[j] for j in layers[i]["in"]]} for i in keep]
    return {**spec, "layers": out}


def without_layer(spec: dict, i: int) -> dict | None:
    """The spec with layer ``i`` taken out, its readers reading its (first) input."""
    layers = spec["layers"]
    if len(layers) < 2:
        return None
    src = layers[i]["in"][0]
    out = []
    for k, layer in enumerate(layers):
        if k == i:
            continue
        ins = [src if j == i + 1 else (j - 1 if j > i + 1 else j) for j in layer["in"]]
        out.append({**layer, "in": ins})
    return used_prefix({**spec, "layers": out}, len(out))


_SIMPLER = {   # parameter -> simpler values to try, in order
    "act": ["none"], "dilation": [1], "multiplier": [1], "padding": ["valid"],
    "strides": [[1, 1]], "kernel": [[1, 1], [3, 3]], "pool": [[2, 2]], "keepdims": [False],
}


def smaller(spec: dict):
    """Specs one simplification away, the biggest cuts first (each may be invalid)."""
    n = len(spec["layers"])
    for end in range(1, n):
        yield used_prefix(spec, end)
    for i in range(n):
        cut = without_layer(spec, i)
        if cut is not None:
            yield cut
    h, w, c = spec["input"]
    for new in ([max(1, h // 2), w, c], [h, max(1, w // 2), c], [h, w, max(1, c // 2)],
                [h - 1, w, c], [h, w - 1, c], [h, w, c - 1]):
        if new != spec["input"]:
            yield {**spec, "input": new}
    if spec["float_io"]:
        yield {**spec, "float_io": False}
    if not spec["per_channel"]:
        yield {**spec, "per_channel": True}
    for i, layer in enumerate(spec["layers"]):
        for key, values in _SIMPLER.items():
            for value in values:
                if key in layer and layer[key] != value:
                    yield _with(spec, i, key, value)
        for key in ("filters", "units"):
            if key in layer and layer[key] > 1:
                yield _with(spec, i, key, layer[key] // 2)
        if "pads" in layer and layer["pads"] != [[0, 0], [0, 0]]:
            yield _with(spec, i, "pads", [[min(p, 1) for p in pair] for pair in layer["pads"]])


def _with(spec: dict, i: int, key: str, value) -> dict:
    layers = [dict(layer) for layer in spec["layers"]]
    layers[i][key] = value
    return {**spec, "layers": layers}


def cost(spec: dict) -> tuple:
    """What shrinking minimizes: layers, then elements, then parameter complexity."""
    node_shapes = shapes(spec)
    return (len(spec["layers"]), sum(_size(s) for s in node_shapes),
            len(json.dumps(spec, sort_keys=True)))


def valid(spec: dict) -> bool:
    try:
        shapes(spec)
    except InvalidSpec:
        return False
    return True
