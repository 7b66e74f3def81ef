"""``report.py --tune-trials N``: the default model built tuned on every Cortex-M target, run and checked like
every bundle, and tabulated beside the untuned one (synthetic report dicts; the option's errors; and end to
end on a QEMU board with a tiny model standing in for the default one)."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from compile.paths import REPO, cache_root

from harness.models import DEFAULT_MODEL

ANALYSIS = {"params": 10, "macs": 1000, "shortcut_adds": 1, "shortcut_bytes": 30, "shortcut_bytes_fused": 20,
            "bytes_moved": 500, "bytes_moved_fused": 400, "peak_live_bytes": 100, "weight_bytes": 10,
            "layers": []}
KERNELS = [  # as compile/backends/cortexm/tuning.py writes bundle.json "tuned"."kernels"
    {"kernel": "sg_k11_sg_dwconv6", "choice": {"widen": 0, "cb": 24, "rows": 17},
     "default": {"widen": 0, "cb": 1, "rows": 11}, "secs_default": 0.0164, "secs_tuned": 0.0150},
    {"kernel": "sg_k3_sg_conv2", "choice": {"widen": 1, "cb": 1, "rows": 11},
     "default": {"widen": 0, "cb": 1, "rows": 11}, "secs_default": 0.0040, "secs_tuned": 0.0039},
    {"kernel": "sg_k30_sg_conv9", "choice": {"widen": 1, "cb": 1, "rows": 11},   # the same layer as k3
     "default": {"widen": 0, "cb": 1, "rows": 11}, "secs_default": 0.0040, "secs_tuned": 0.0039},
]


def _run_rec(instr: int, cycles: int, clock: float, arena: int, code: int, tuned) -> dict:
    """A Cortex-M target record after its run and speed (``harness.report.speed``)."""
    return {"status": "ok", "bundle": "b", "tvm_instructions": instr, "instructions_per_mac": instr / 1000,
            "cycles_estimate": cycles, "ms_estimate": cycles / clock * 1e3, "arena_bytes": arena,
            "arena_lower_bound": arena, "arena_live_bound": arena, "flash_bytes": code + 1000,
            "flash_code_bytes": code, "raw": {"run": {}, "bundle": {"tuned": tuned}}}


def _tuning(trials: int = 300) -> dict:
    return {"tuning_db": "/cache/tuning/db", "tuning_trials": trials, "unit": "estimated cycles",
            "kernels": copy.deepcopy(KERNELS)}


def _report(tuned: bool = True) -> dict:
    """A report dict as ``report.py --tune-trials 300 --targets mps2-an386,nucleo-l4r5zi`` writes it: the
    default model and one other, the default one tuned on both boards."""
    clocks = {"mps2-an386": 25e6, "nucleo-l4r5zi": 120e6}
    models = []
    for name, multiplier in ((DEFAULT_MODEL, 1.0), ("mobilenext_mcu_m050", 0.5)):
        targets = {b: _run_rec(16_000_000, 19_500_000, c, 33_280, 18_780, False) for b, c in clocks.items()}
        m = {"name": name, "identity_multiplier": multiplier, "trained": False, "accuracy": None,
             "analysis": ANALYSIS, "tflm": {}, "inputs": {"source": "test images"}, "targets": targets,
             "agreement": {"reference": "LiteRT BUILTIN_REF", "samples": 20, "all_bit_exact": True,
                           "targets": {b: {"bit_exact": True} for b in targets}, "not_run": []}}
        if tuned and name == DEFAULT_MODEL:
            m["tuned"] = {"mps2-an386": {**_run_rec(15_800_000, 19_000_000, 25e6, 33_280, 19_012, _tuning()),
                                         "tuning": {"db": "/cache/tuning/db", "trials_asked": 300,
                                                    "trials_before": 0}},
                          "nucleo-l4r5zi": {**_run_rec(15_800_000, 19_100_000, 120e6, 33_280, 19_012,
                                                       _tuning()),
                                            "cycles_estimate_max": 50_000_000,
                                            "tuning": {"db": "/cache/tuning/db2", "trials_asked": 300,
                                                       "trials_before": 300}}}
            m["tuned"]["nucleo-l4r5zi"]["ms_estimate_max"] = 50_000_000 / 120e6 * 1e3
            m["targets"]["nucleo-l4r5zi"].update(cycles_estimate_max=52_000_000,
                                                 ms_estimate_max=52_000_000 / 120e6 * 1e3)
            m["agreement"]["targets"].update({f"{b} tuned": {"bit_exact": True} for b in clocks})
        models.append(m)
    return {"schema": "sandglass-report", "schema_version": 2, "suite": None, "created": "now",
            "command": "python harness/report.py --tune-trials 300 --out reports/r",
            "versions": {"apache-tvm": "x"}, "git": {"commit": "abc", "dirty": False},
            "machine": {"cpu": "cpu", "cores": 2, "system": "linux"}, "complete": True,
            "settings": {"quick": False, "samples": 20, "repeats": 50, "threads": 1, "jobs": 2,
                         "tune_trials": 300 if tuned else 0, "cache": "build/harness-cache"},
            "targets": {b: {"kind": "cortex-m", "description": b, "clock_hz": c, "measures": "instructions"}
                        for b, c in clocks.items()},
            "models": models, "default_model": DEFAULT_MODEL, "failures": [],
            "commands": ["python compile/build.py --target mps2-an386 --model models/m.tflite --out b "
                         "--tune-trials 300"]}


def test_tuned_table_holds_the_runs_and_the_kernels_from_bundle_json():
    from harness.markdown import render

    md = render(_report())
    assert f"## Cortex-M: {DEFAULT_MODEL} untuned and tuned" in md
    assert "`--tune-trials 300`" in md and "ran the same 20 inputs" in md
    # whole model: from the runs; cycles change over both ends where a board has a range
    assert ("| mps2-an386 | 25 MHz | 16,000,000 | 15,800,000 | -1.2 % | 19,500,000 | 19,000,000 | -2.6 % "
            "| 780.0 | 760.0 | 33,280 / 33,280 | 18,780 / 19,012 | 3 | 300 | ok |") in md
    assert ("| nucleo-l4r5zi | 120 MHz | 16,000,000 | 15,800,000 | -1.2 % | 19,500,000 .. 52,000,000 "
            "| 19,100,000 .. 50,000,000 | -2.1 % .. -3.8 % | 162.5 .. 433.3 | 159.2 .. 416.7 ") in md
    # per kernel: bundle.json's seconds x the board's clock, the largest saving first, labelled as alone
    table = md.split("### mps2-an386: kernel calls with a tuned choice")[1].split("###")[0]
    assert "measured alone in its benchmark firmware" in table
    assert ("| kernel calls | choice changed | estimated cycles alone, default | estimated cycles alone, tuned "
            "| change |") in table
    rows = [l for l in table.splitlines() if l.startswith("| sg_")]
    assert rows == ["| sg_k11_sg_dwconv6 | cb 1 → 24, rows 11 → 17 | 410,000 | 375,000 | -8.5 % |",
                    "| sg_k3_sg_conv2, sg_k30_sg_conv9 | widen 0 → 1 | 100,000 | 97,500 | -2.5 % |"]
    assert "| sg_k11_sg_dwconv6 | cb 1 → 24, rows 11 → 17 | 1,968,000 | 1,800,000 | -8.5 % |" in md
    assert "`/cache/tuning/db`, 300 trials; 300 of them measured by this report's build" in md
    assert "`/cache/tuning/db2`, 300 trials; reused: this report measured none" in md
    # the tuned bundles' agreement beside the targets'; the other model has none
    header = next(l for l in md.splitlines() if l.startswith("| model | mps2-an386 |"))
    assert header.endswith("| mps2-an386 tuned | nucleo-l4r5zi tuned | all targets that ran bit-exact |")
    other = next(l for l in md.splitlines() if l.startswith("| mobilenext_mcu_m050 | bit-exact"))
    assert other.endswith("| – | – | yes |")
    assert "--tune-trials 300" in md.split("## Commands run")[1]


def test_without_tuned_data_the_report_is_as_before():
    from harness.markdown import render

    md = render(_report(tuned=False))
    assert "untuned and tuned" not in md and "tuned |" not in md
    header = next(l for l in md.splitlines() if l.startswith("| model | mps2-an386 |"))
    assert header == "| model | mps2-an386 | nucleo-l4r5zi | all targets that ran bit-exact |"


def test_no_kernel_call_tuned_and_a_tuned_build_that_failed():
    from harness.markdown import render

    report = _report()
    m = report["models"][0]
    m["tuned"]["mps2-an386"]["raw"]["bundle"]["tuned"]["kernels"] = []
    m["tuned"]["nucleo-l4r5zi"] = {"status": "failed", "bundle": "b", "error": "compile/build.py exit 2: error: x",
                                   "tuning": {"db": "/cache/tuning/db2", "trials_asked": 300, "trials_before": 0}}
    del m["agreement"]["targets"]["nucleo-l4r5zi tuned"]
    m["agreement"]["not_run"] = ["nucleo-l4r5zi tuned"]
    md = render(report)
    assert "| 0 | 300 | ok |" in md and "(no kernel call took a tuned choice)" in md
    assert ("| nucleo-l4r5zi | 120 MHz | 16,000,000 | – | – | 19,500,000 .. 52,000,000 | – | – |" in md
            and "| – | – | tuned: FAILED compile/build.py exit 2: error: x |" in md)
    assert "(withheld: the tuned bundle's status is FAILED compile/build.py exit 2: error: x)" in md
    agreement = next(l for l in md.splitlines() if l.startswith(f"| {DEFAULT_MODEL} | bit-exact"))
    assert agreement.endswith("| bit-exact (20 inputs) | FAILED (no output) | yes |")


def test_a_tuned_bundle_that_disagrees_fails_the_gate():
    """The tuned outputs go through the same bit-exact gate as every target's: a mismatch is a failure, and
    every speed of the model is withheld."""
    from harness.markdown import render
    from harness.report import judge_agreement

    report = _report()
    m = report["models"][0]
    for rec in (*m["targets"].values(), *m["tuned"].values()):
        rec["status"] = "ran"
    expected = np.arange(40, dtype=np.int8).reshape(4, 10)
    wrong = expected.copy()
    wrong[2, 3] += 1
    outputs = {"mps2-an386": expected.copy(), "nucleo-l4r5zi": expected.copy(),
               "mps2-an386 tuned": wrong, "nucleo-l4r5zi tuned": expected.copy()}
    failures = report["failures"]
    judge_agreement(m, outputs, expected, failures)
    assert not m["agreement"]["all_bit_exact"] and m["agreement"]["not_run"] == []
    assert m["agreement"]["targets"]["mps2-an386 tuned"]["mismatched_values"] == 1
    assert failures == [{"model": DEFAULT_MODEL, "target": "mps2-an386 tuned", "error": "outputs disagree"}]
    assert {r["status"] for r in (*m["targets"].values(), *m["tuned"].values())} == {"withheld"}
    md = render(report)
    assert "DIFFERENT (1 values" in md and "- mobilenext_mcu_m100 on mps2-an386 tuned: outputs disagree" in md
    assert "untuned: withheld speed withheld: outputs of mps2-an386 tuned differ from LiteRT reference" in md
    assert "(withheld: the tuned bundle's status is withheld" in md


@pytest.mark.parametrize("tuned", [True, False])
def test_render_only_redoes_the_report_with_and_without_tuned_data(tmp_path, tuned):
    from harness import report

    (tmp_path / "report.json").write_text(json.dumps(_report(tuned)))
    assert report.main(["--render-only", "--out", str(tmp_path)]) == 0
    assert ("## Cortex-M: mobilenext_mcu_m100 untuned and tuned" in (tmp_path / "report.md").read_text()) == tuned


@pytest.mark.parametrize("args, expected", [
    (["--tune-trials", "-1"], "error: --tune-trials must be >= 0, got -1"),
    (["--tune-trials", "many"], "error: argument --tune-trials: invalid int value: 'many'"),
    (["--tune-trials", "3", "--suite", "mlperf-tiny"], "error: --tune-trials tunes the catalog's"),
    (["--tune-trials", "3", "--models", "mobilenext_mcu_m050"], "which --models does not name"),
    (["--tune-trials", "3", "--targets", "host"], "and --targets names none"),
])
def test_bad_tune_trials_is_one_error_line(tmp_path, capsys, args, expected):
    from harness import report

    out = tmp_path / "r"
    try:
        code = report.main([*args, "--out", str(out)])
    except SystemExit as exit:   # argparse's own errors exit from the parser
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and expected in err, err
    assert not out.exists()


def test_the_default_model_gets_a_tuned_bundle_on_each_cortex_m_target(tmp_path):
    """What each bundle is built with: the untuned Cortex-M ones against an empty database, so that the
    (model, board) database the tuned ones fill never changes them; the tuned one with --tune-trials."""
    from compile.targets import get_target

    from harness.report import NO_TUNING_DB, _build_options, _variants, parse_args

    assert parse_args(["--out", str(tmp_path)]).tune_trials == 0
    args = parse_args(["--tune-trials", "300", "--out", str(tmp_path), "--cache", str(tmp_path / "c")])
    targets = [get_target(n) for n in ("host", "mps2-an386", "nucleo-l4r5zi")]
    entries = [SimpleNamespace(name=n) for n in (DEFAULT_MODEL, "mobilenext_mcu_m050")]
    variants = [(e.name, t.name, tuned) for e, t, tuned in _variants(entries, targets, args)]
    assert variants[-2:] == [(DEFAULT_MODEL, "mps2-an386", True), (DEFAULT_MODEL, "nucleo-l4r5zi", True)]
    assert len(variants) == 2 * 3 + 2
    host, board = targets[:2]
    assert _build_options(args, host, False) == []
    assert _build_options(args, board, False) == ["--tuning-db", str(tmp_path / "c" / NO_TUNING_DB)]
    assert _build_options(args, board, True) == ["--tune-trials", "300"]
    assert len(_variants(entries, targets, parse_args(["--out", str(tmp_path)]))) == 2 * 3


@pytest.mark.slow
@pytest.mark.emulator
def test_tuned_end_to_end_on_a_qemu_board(tmp_path):
    """A tiny model named as the default one, tuned on mps2-an386 into a database of this test's own: the
    tuned bundle is built, run, checked bit-exact and tabulated; a second report reuses the database."""
    from keras_model.data import load_dataset
    from keras_model.export import convert_int8
    from tests.harness.test_report import _tiny_mobilenext

    model = tmp_path / f"{DEFAULT_MODEL}_int8.tflite"
    model.write_bytes(convert_int8(_tiny_mobilenext(1.0), load_dataset("train", 32, 1, limit=16)[0]))
    cache = tmp_path / "sandglass-cache"   # the tuning database of this test only
    for part in ("qemu-plugin", "mca"):      # built once per machine: copied, not built again
        if (cache_root() / part).is_dir():
            shutil.copytree(cache_root() / part, cache / part)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "SANDGLASS_CACHE": str(cache)}

    def report(out):
        return subprocess.run([sys.executable, "harness/report.py", "--targets", "mps2-an386", "--models",
                               str(model), "--samples", "2", "--repeats", "1", "--tune-trials", "50", "--out",
                               str(out), "--cache", str(tmp_path / "c")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=1800)

    proc = report(tmp_path / "r1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((tmp_path / "r1" / "report.json").read_text())
    m = rep["models"][0]
    tuned, untuned = m["tuned"]["mps2-an386"], m["targets"]["mps2-an386"]
    assert tuned["status"] == untuned["status"] == "ok"
    assert m["agreement"]["targets"]["mps2-an386 tuned"]["bit_exact"] and m["agreement"]["all_bit_exact"]
    assert untuned["raw"]["bundle"]["tuned"] is False
    info = tuned["raw"]["bundle"]["tuned"]
    assert info["tuning_trials"] > 0 and info["unit"] == "estimated cycles"
    assert tuned["tuning"]["trials_before"] == 0 and tuned["tuning"]["trials_asked"] == 50
    assert tuned["tvm_instructions"] > 0 and tuned["cycles_estimate"] > 0
    assert any(c.endswith("--tune-trials 50") for c in rep["commands"])
    assert any(c.endswith(f"--tuning-db {tmp_path / 'c' / 'no-tuning-db'}") for c in rep["commands"])
    md = (tmp_path / "r1" / "report.md").read_text()
    assert f"## Cortex-M: {DEFAULT_MODEL} untuned and tuned" in md and "measured by this report's build" in md
    # the second report reuses the database (it holds the trials asked, or the whole choice space); the
    # untuned bundle stays untuned beside it
    proc = report(tmp_path / "r2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "r2" / "report.json").read_text())["models"][0]
    assert m["tuned"]["mps2-an386"]["tuning"]["trials_before"] == info["tuning_trials"]
    assert m["targets"]["mps2-an386"]["raw"]["bundle"]["tuned"] is False
    assert m["tuned"]["mps2-an386"]["raw"]["bundle"]["tuned"]["kernels"] == info["kernels"]
    assert "reused: this report measured none" in (tmp_path / "r2" / "report.md").read_text()
