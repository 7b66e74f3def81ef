"""Static analysis of a Keras model, in the spirit of ST Edge AI's ``analyze``: per-op parameters,
multiply-accumulates (MACs), activation sizes and the cost of the shortcut adds.

Rows follow the deployed int8 graph rather than the Keras layers: a convolution or dense layer absorbs the
BatchNorm and ReLU that follow it (the TFLite converter folds them into one op), dropout disappears
(identity at inference). MACs count convolutions and dense layers, the figure papers report
(MobileNeXt-1.0 at 224x224: 311.3 M). Sizes are in bytes at ``bytes_per_element`` (1 for int8).
"""

import math

# Keras layer class -> short op name of a row. Layers of other classes keep their class name.
_OPS = {
    "InputLayer": "Input",
    "Conv2D": "Conv2D",
    "DepthwiseConv2D": "DepthwiseConv2D",
    "Dense": "Dense",
    "GlobalAveragePooling2D": "AvgPool",
}
_FUSING = {"Conv2D", "DepthwiseConv2D", "Dense"}     # ops that absorb a following BN / ReLU
_FUSED = {"BatchNormalization": "BN", "ReLU": "ReLU6"}  # layers absorbed into the op before them
_DROPPED = {"Dropout"}                                  # identity at inference


def _inputs(layer):
    """Producer layers of ``layer``'s inputs (none for an InputLayer)."""
    if type(layer).__name__ == "InputLayer":
        return []
    tensors = layer.input if isinstance(layer.input, list) else [layer.input]
    return [t._keras_history.layer for t in tensors]


def _macs(layer):
    kind = type(layer).__name__
    out = layer.output.shape
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        return out[1] * out[2] * out[3] * kh * kw * layer.input.shape[-1] // layer.groups
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        return out[1] * out[2] * out[3] * kh * kw
    if kind == "Dense":
        return layer.input.shape[-1] * out[-1]
    return 0


def _count(weights):
    return sum(math.prod(w.shape) for w in weights)


def _shortcut(layer, bytes_per_element):
    """Channels added by a shortcut and the bytes its add reads (both operands) and writes."""
    shape = layer.output.shape
    channels = shape[-1]
    added = layer.channels_added(channels) if hasattr(layer, "channels_added") else channels
    pixels = math.prod(shape[1:-1])
    return {"channels": channels, "channels_added": added,
            "read_bytes": 2 * pixels * added * bytes_per_element,
            "write_bytes": pixels * added * bytes_per_element}


def analyze(model, bytes_per_element=1):
    """Per-op table and totals of ``model``:
    ``{"layers": [{"name", "op", "output_shape", "params", "macs", "activation_bytes"[, "shortcut"]}],
    "params", "non_trainable_params", "macs", "activation_bytes", "peak_activation_bytes", "shortcuts"}``.

    ``peak_activation_bytes`` is the largest sum of live tensors (inputs still needed later + the output)
    while executing the rows in order, a lower bound for an arena without in-place ops.
    """
    consumers = {}                 # Keras layer name -> how many layers of this model read its output
    for layer in model.layers:
        for producer in _inputs(layer):
            consumers[producer.name] = consumers.get(producer.name, 0) + 1
    rows, row_of = [], {}          # row_of: Keras layer name -> index of the row producing its output
    for layer in model.layers:
        kind = type(layer).__name__
        producers = _inputs(layer)
        if len(producers) == 1:
            source = rows[row_of[producers[0].name]]
            single_use = consumers[producers[0].name] == 1
            fuse = kind in _FUSED and source["_kind"] in _FUSING and single_use and not source["_closed"]
            if kind in _DROPPED or fuse:
                row_of[layer.name] = row_of[producers[0].name]
                if fuse:
                    source["op"] += "+" + _FUSED[kind]
                    source["params"] += _count(layer.trainable_weights)
                    source["_non_trainable"] += _count(layer.non_trainable_weights)
                    source["_closed"] = kind == "ReLU"
                continue
        shape = tuple(layer.output.shape[1:])
        row = {"name": layer.name, "op": _OPS.get(kind, kind), "output_shape": list(shape),
               "params": _count(layer.trainable_weights), "macs": _macs(layer),
               "activation_bytes": math.prod(shape) * bytes_per_element,
               "_kind": kind, "_closed": False, "_non_trainable": _count(layer.non_trainable_weights),
               "_inputs": sorted({row_of[p.name] for p in producers})}
        if kind in ("Add", "IdentityMultiplierAdd"):
            row["shortcut"] = _shortcut(layer, bytes_per_element)
            if row["shortcut"]["channels_added"] < row["shortcut"]["channels"]:
                row["op"] = "PartialAdd"   # slices + add + concatenation
            else:
                row["op"] = "Add"
        row_of[layer.name] = len(rows)
        rows.append(row)

    last_use = {}
    for i, row in enumerate(rows):
        for j in row["_inputs"]:
            last_use[j] = i
    peak = 0
    for i, row in enumerate(rows):
        live = sum(r["activation_bytes"] for j, r in enumerate(rows[:i]) if last_use.get(j, -1) >= i)
        peak = max(peak, live + row["activation_bytes"])

    shortcuts = [r["shortcut"] for r in rows if "shortcut" in r]
    totals = {
        "params": sum(r["params"] for r in rows),
        "non_trainable_params": sum(r["_non_trainable"] for r in rows),
        "macs": sum(r["macs"] for r in rows),
        "activation_bytes": sum(r["activation_bytes"] for r in rows),
        "peak_activation_bytes": peak,
        "shortcuts": {"count": len(shortcuts),
                      **{k: sum(s[k] for s in shortcuts)
                         for k in ("channels", "channels_added", "read_bytes", "write_bytes")}},
    }
    for r in rows:
        for key in [k for k in r if k.startswith("_")]:
            del r[key]
    return {"layers": rows, **totals}
