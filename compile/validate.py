"""Validate a target against LiteRT: ``python compile/validate.py --target T --model M.tflite
[--bundle DIR] [--n 100] [--atol 0] [--port qemu|PORT] [--json [FILE]]``.

Runs the same N inputs through LiteRT with its reference kernels (the bit-exactness
reference, ``compile.measure``) and through the target's bundle (built into a temp dir
when --bundle is not given), and reports top-1 agreement, equal values (%), max |diff| and
RMSE (in output LSB for int8 outputs).  Inputs are the first N Fashion-MNIST test images,
resized and quantized like the model's input, or seeded random inputs when the model input
is not an image (NHWC with 1 or 3 channels, square).  On a Cortex-M board, ``--port`` sends
the inputs over the console link (``compile.backends.cortexm.link``): ``qemu`` runs the link
firmware on the board's QEMU twin, a serial port (``/dev/ttyACM0``, ``socket://H:P``) talks to
a board running it (``make flash-link`` in the bundle's project).  Exit code 1 when max |diff| > --atol
(default 0: bit-exact), 2 for bad input.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from compile import cli  # noqa: E402

def validate(model: Path, target_name: str, bundle: Path | None, n: int,
             port: str | None = None) -> dict:
    """The validation report (see compare) for N inputs."""
    from compile.bundle import model_info, read_manifest
    from compile.backends import build_bundle, run_bundle
    from compile.frontend import read_model
    from compile.measure import compare, run_litert, validation_inputs
    from compile.targets import get_target

    target = get_target(target_name)
    if port and target.kind != "cortex-m":
        raise cli.UserError(f"--port talks to a Cortex-M board; {target.name} is not one")
    _, info = read_model(model)
    x, labels, data = validation_inputs(info, n)
    with tempfile.TemporaryDirectory(prefix="sandglass-validate-") as tmp:
        if bundle is None:
            bundle = build_bundle(model, target.name, Path(tmp) / "bundle", {},
                                  cli.command_line())
        manifest = read_manifest(bundle, target)
        built_from = model_info(manifest)
        if built_from.sha256 != info.sha256:
            raise cli.UserError(f"bundle {bundle} was built from {built_from.path}, "
                                f"not from {model} (sha256 differs)")
        actual, metrics = run_bundle(bundle, target.name, x, {"port": port} if port else {})
    reference = run_litert(model, x, reference=True)
    report = {
        "target": target.name,
        "model": str(model),
        "sha256": info.sha256,
        "float_ops": manifest["float_ops"],
        "inputs": data,
        "n": int(len(x)),
        **compare(reference, actual),
        "target_metrics": metrics,
    }
    if labels is not None:
        report["top1_accuracy_reference_pct"] = float(100.0 * np.mean(
            reference.reshape(len(x), -1).argmax(1) == labels))
        report["top1_accuracy_target_pct"] = float(100.0 * np.mean(
            actual.reshape(len(x), -1).argmax(1) == labels))
    return report


def _text(report: dict, atol: float) -> str:
    unit = "lsb" if "max_abs_diff_lsb" in report else "value"
    suffix = " LSB" if unit == "lsb" else ""
    lines = [
        f"target {report['target']}  model {report['model']}",
        f"{report['n']} inputs ({report['inputs']}), float ops left after lowering: "
        f"{sum(report['float_ops'].values())}",
        f"top-1 agreement   {report['top1_agreement_pct']:.2f} %",
        f"equal values      {report['equal_values_pct']:.2f} %",
        f"max |diff|        {report[f'max_abs_diff_{unit}']:g}{suffix}",
        f"RMSE              {report[f'rmse_{unit}']:.4g}{suffix}",
    ]
    if "top1_accuracy_target_pct" in report:
        lines.append(f"top-1 accuracy    reference {report['top1_accuracy_reference_pct']:.2f} %, "
                     f"target {report['top1_accuracy_target_pct']:.2f} %")
    m = report.get("target_metrics") or {}
    if m.get("cycles_estimate"):
        est = m["estimate"]
        spread = (f" .. {m['cycles_estimate_max']:,} ({m['ms_estimate_max']:.3f} ms) if no flash "
                  "access hits" if m["cycles_estimate_max"] != m["cycles_estimate"] else "")
        lines.append(f"instructions      {m['instructions_per_inference']:,} per inference")
        lines.append(f"estimated cycles  {m['cycles_estimate']:,} ({m['ms_estimate']:.3f} ms at "
                     f"{est['clock_hz'] / 1e6:g} MHz, {est['cpu']}){spread}")
    if m.get("port"):
        what = "cycles" if "cycles_per_inference" in m else "instructions"
        ms = f" ({m['ms_per_inference']:.3f} ms)" if "ms_per_inference" in m else ""
        lines.append(f"over the link     {m['port']} ({m['ran_on']}, clock "
                     f"{m['board_clock_hz'] / 1e6:g} MHz): {m[f'{what}_per_inference']:,} "
                     f"{what} per inference{ms}")
    verdict = "BIT-EXACT" if report["bit_exact"] else (
        "within --atol" if report["passed"] else f"FAILED (--atol {atol:g})")
    lines.append(verdict)
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--target", required=True, help="target name or alias (targets/*.toml)")
    parser.add_argument("--model", help=f"int8 .tflite (default {cli.DEFAULT_MODEL.name})")
    parser.add_argument("--bundle", type=Path, help="bundle to check (default: build one)")
    parser.add_argument("--n", type=int, default=100, help="number of inputs (default 100)")
    parser.add_argument("--atol", type=float, default=0.0,
                        help="allowed max |diff| (output LSB for int8; default 0 = bit-exact)")
    parser.add_argument("--port", help="Cortex-M: run over the console link, on 'qemu' (the "
                        "board's QEMU twin) or a serial port such as /dev/ttyACM0")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="print the report as JSON (to FILE if given)")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise cli.UserError(f"--n must be at least 1, got {args.n}")
    if args.atol < 0:
        raise cli.UserError(f"--atol must not be negative, got {args.atol:g}")
    report = validate(cli.model_path(args.model), args.target, args.bundle, args.n, args.port)
    max_diff = report.get("max_abs_diff_lsb", report.get("max_abs_diff_value"))
    report["atol"] = args.atol
    report["passed"] = bool(max_diff <= args.atol)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        if args.json:
            cli.save_json(Path(args.json), report)
        print(_text(report, args.atol))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.main(run))
