"""Run a bundle: ``python compile/run.py --target T --bundle DIR --input in.npy --output out.npy
[--port qemu|PORT] [--json metrics.json]``.

in.npy holds N samples shaped like the model input with batch N, in the model's input dtype;
out.npy gets the N outputs.  The target kind's backend (``compile.backends``) runs them; on a
Cortex-M board, ``--port`` sends them over the console link (see compile/validate.py).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compile import cli  # noqa: E402


def run(argv: Sequence[str] | None = None) -> int:
    from compile.backends import run_bundle
    from compile.bundle import model_info, read_manifest
    from compile.targets import get_target

    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--target", required=True, help="target name or alias (targets/*.toml)")
    parser.add_argument("--bundle", required=True, type=Path, help="bundle from compile/build.py")
    parser.add_argument("--input", required=True, type=Path, help=".npy, N samples")
    parser.add_argument("--output", required=True, type=Path, help=".npy to write, N outputs")
    parser.add_argument("--port", help="Cortex-M: run over the console link, on 'qemu' (the "
                        "board's QEMU twin) or a serial port such as /dev/ttyACM0")
    parser.add_argument("--json", type=Path, help="write the run metrics to this JSON file")
    cli.add_opt_argument(parser)
    args = parser.parse_args(argv)
    opts = cli.parse_opts(args.opt)
    target = get_target(args.target)
    if args.port:
        if target.kind != "cortex-m":
            raise cli.UserError(f"--port talks to a Cortex-M board; {target.name} is not one")
        opts["port"] = args.port
    info = model_info(read_manifest(args.bundle, target))
    inputs = cli.load_inputs(args.input, info)
    outputs, metrics = run_bundle(args.bundle, target.name, inputs, opts)
    cli.save_npy(args.output, outputs)
    if args.json:
        cli.save_json(args.json, {"target": target.name, "bundle": str(args.bundle),
                                  "samples": len(inputs), **metrics})
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(run))
