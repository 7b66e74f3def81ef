"""``python -m compile.difftest [--n 500] [--seed 0] [--targets all|T,T] [--jobs 2]
[--out DIR] [--save-regressions DIR]``: differential testing of generated models.

Draws ``--n`` random int8 models (seeds ``--seed`` .. ``--seed + n - 1``, each the same model
on every run), compiles each for every target, runs it on ``--inputs`` random inputs and
compares the outputs bit for bit with LiteRT's reference kernels.  A model that fails is
shrunk to the smallest one that still fails the same way on that target; ``--save-regressions
DIR`` keeps each as ``DIR/<seed>-<target>-<status>.json`` (tests/difftest_cases is the one
``make test`` runs).  Writes ``--out DIR/results.json``; exit code 0 when every run was
bit-exact, 1 otherwise, 2 for bad arguments.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

from compile import cli
from compile.difftest.check import ALL_TARGETS


def parse_targets(value: str) -> list[str]:
    from compile.targets import get_target

    names = ALL_TARGETS if value == "all" else [v for v in value.split(",") if v]
    if not names:
        raise cli.UserError("--targets names no target")
    return [get_target(n).name for n in names]


def run(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    from compile.difftest import campaign

    parser = cli.ArgumentParser(__doc__, prog="python -m compile.difftest")
    parser.add_argument("--n", type=int, default=50, help="models to generate (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--targets", default="all",
                        help=f"'all' ({','.join(ALL_TARGETS)}) or a comma-separated list")
    parser.add_argument("--inputs", type=int, default=4, help="inputs per model (default 4)")
    parser.add_argument("--max-layers", type=int, default=6, help="layers per model, at most")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--shrink-budget", type=int, default=80,
                        help="smaller models tried per failure (default 80; 0: no shrinking)")
    parser.add_argument("--out", type=Path, default=cli.REPO / "build" / "difftest",
                        help="where results.json goes (default build/difftest)")
    parser.add_argument("--save-regressions", type=Path, metavar="DIR",
                        help="write each shrunk failure as a JSON case into DIR")
    args = parser.parse_args(argv)
    for name in ("n", "inputs", "max_layers", "jobs"):
        if getattr(args, name) < 1:
            raise cli.UserError(f"--{name.replace('_', '-')} must be at least 1")
    targets = parse_targets(args.targets)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    logs = args.out / "logs"
    bar = tqdm(total=args.n, desc="difftest", unit="model", dynamic_ncols=True)
    failing: set[int] = set()
    aarch64 = [t for t in targets if campaign.is_aarch64(t)]
    if aarch64:
        bar.write(f"building for {', '.join(targets)}; the {', '.join(aarch64)} bundles run "
                  "together in one emulator at the end")

    def progress(result, outcomes, done):
        if done:
            bar.update(1)
        for o in outcomes:
            if o.status != "exact":
                failing.add(result.seed)
                bar.write(f"seed {result.seed} {o.target}: {o.status} {o.detail}\n"
                          f"  {campaign.specs.describe(result.spec)}")
        if result.skipped and done:
            bar.write(f"seed {result.seed} skipped: {result.skipped}")
        bar.set_postfix(failing=len(failing))

    results = campaign.run_campaign(range(args.seed, args.seed + args.n), targets, args.inputs,
                                    args.jobs, args.max_layers, progress, logs)
    bar.close()
    report = campaign.summary(results, targets)
    cases = []
    if args.shrink_budget and report["failing_models"]:
        todo = sum(len(r.failures) for r in results)
        sbar = tqdm(total=todo, desc="shrink", unit="failure", dynamic_ncols=True)

        def shrunk(case):
            sbar.update(1)
            sbar.write(f"{campaign.case_name(case)}: {case['model']}")
        cases = campaign.shrink_failures(results, args.inputs, args.shrink_budget, args.jobs,
                                         shrunk, logs)
        sbar.close()
        if args.save_regressions:
            for case in cases:
                campaign.save_case(case, args.save_regressions)
    report["seconds"] = round(time.monotonic() - start, 1)
    report["command"] = cli.command_line()
    cli.save_json(args.out / "results.json", {**report, "shrunk": cases,
                                              "models": [r.to_json() for r in results]})
    print(f"{report['checked']} models ({report['skipped']} skipped) x {len(targets)} targets: "
          f"{report['runs']} runs, {report['mismatches']} mismatches, "
          f"{report['build_failures']} build failures in {report['seconds']:.0f} s "
          f"({args.out / 'results.json'})")
    return 0 if not report["mismatches"] and not report["build_failures"] else 1


if __name__ == "__main__":
    sys.exit(cli.main(run))
