"""Build a bundle: ``python compile/build.py --target host [--model M.tflite] [--out DIR]``.

.tflite -> ``compile.pipeline.compile_model`` (checks, import, integer lowering) -> the
target kind's backend (``compile.backends``) -> bundle dir with ``bundle.json``
(``compile.bundle``).  Default --out: ``build/<model stem>-<target>``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compile import cli  # noqa: E402


def run(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--target", required=True, help="target name or alias (targets/*.toml)")
    parser.add_argument("--model", help=f"int8 .tflite (default {cli.DEFAULT_MODEL.name})")
    parser.add_argument("--out", type=Path, help="bundle directory to create")
    cli.add_opt_argument(parser)
    # MetaSchedule tuning (compile/llvm_cpu/tuning.py): database per (model, target), reused and resumed
    parser.add_argument("--tune-trials", type=int, help="tune until the database has N trials")
    parser.add_argument("--tuning-db", help="tuning database dir (default: per model+target)")
    parser.add_argument("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker (measure on device)")
    parser.add_argument("--rpc-key", help="the device's key at the RPC tracker, e.g. rpi4")
    args = parser.parse_args(argv)
    opts = cli.parse_opts(args.opt)
    opts.update({k: v for k in ("tune_trials", "tuning_db", "rpc_tracker", "rpc_key")
                 if (v := getattr(args, k)) is not None})
    from compile.backends import build_bundle

    out = build_bundle(cli.model_path(args.model), args.target, args.out, opts,
                       cli.command_line())
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(run))
