"""Print a per-op analysis of a model (parameters, MACs, activation bytes, shortcut adds), like ST Edge AI's
``analyze``.

    python keras_model/summary.py --arch mobilenext --width 1.0 --resolution 224 --channels 3 --classes 1000
    python keras_model/summary.py --preset mobilenext-mcu --identity-multiplier 0.5 --json

Without ``--arch``/``--preset`` the default preset is used; the other options override the preset's values.
Sizes are for int8 (1 byte per element). Bad input: one line ``error: ...`` on stderr, exit code 2.
"""

import argparse
import json
import os
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        _fail(message)


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _parser():
    p = _Parser(description="Per-op parameters, MACs and activation sizes of a model (int8 sizes).")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", help="preset name (default: the project default preset)")
    which.add_argument("--arch", help="architecture name (mobilenext, mobilenetv2) with its default knobs")
    p.add_argument("--width", type=float, help="width multiplier (> 0)")
    p.add_argument("--resolution", type=int, help="input height = width in pixels (>= 32)")
    p.add_argument("--channels", type=int, help="input channels")
    p.add_argument("--classes", type=int, help="number of classes (>= 2)")
    p.add_argument("--identity-multiplier", type=float, help="MobileNeXt identity tensor multiplier in (0, 1]")
    p.add_argument("--scale-last-stage", action=argparse.BooleanOptionalAction, default=None,
                   help="also scale the 1280-channel last stage below width 1")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


def _table(name, config, a):
    head = f"{'layer':<22} {'op':<26} {'output':>14} {'params':>9} {'MACs':>11} {'act B':>9}  shortcut"
    lines = [f"model {name}: " + ", ".join(f"{k}={v}" for k, v in config.items()), head, "-" * len(head)]
    for r in a["layers"]:
        shape = "x".join(str(d) for d in r["output_shape"])
        extra = ""
        if "shortcut" in r:
            s = r["shortcut"]
            extra = (f"adds {s['channels_added']}/{s['channels']} ch, "
                     f"reads {s['read_bytes']} B, writes {s['write_bytes']} B")
        lines.append(f"{r['name']:<22} {r['op']:<26} {shape:>14} {r['params']:>9,} {r['macs']:>11,} "
                     f"{r['activation_bytes']:>9,}  {extra}")
    s = a["shortcuts"]
    lines += ["-" * len(head),
              f"params (trainable)     {a['params']:,}   (+ {a['non_trainable_params']:,} BN statistics)",
              f"MACs (conv + dense)    {a['macs']:,}   ({a['macs'] / 1e6:.1f} M)",
              f"activations            {a['activation_bytes']:,} B in total, "
              f"peak of live tensors {a['peak_activation_bytes']:,} B",
              f"shortcuts              {s['count']} adds of {s['channels_added']:,}/{s['channels']:,} channels, "
              f"read {s['read_bytes']:,} B, write {s['write_bytes']:,} B"]
    return "\n".join(lines)


def main(argv=None):
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in {
        "width": args.width, "resolution": args.resolution, "channels": args.channels, "classes": args.classes,
        "identity_multiplier": args.identity_multiplier, "scale_last_stage": args.scale_last_stage,
    }.items() if v is not None}

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # keep TensorFlow's start-up chatter off stderr
    from keras_model.counting import analyze
    from keras_model.factory import DEFAULT_PRESET, create_model, list_models, list_presets, model_config

    if args.arch is not None and args.arch not in list_models():
        _fail(f"unknown architecture {args.arch!r} (choose from {', '.join(list_models())})")
    if args.preset is not None and args.preset not in list_presets():
        _fail(f"unknown preset {args.preset!r} (choose from {', '.join(list_presets())})")
    name = args.arch or args.preset or DEFAULT_PRESET
    try:
        config = model_config(name, **overrides)
    except ValueError as e:
        _fail(str(e))
    analysis = analyze(create_model(name, **overrides))
    if args.json:
        print(json.dumps({"model": name, "config": config, **analysis}))
    else:
        print(_table(name, config, analysis))


if __name__ == "__main__":
    main()
