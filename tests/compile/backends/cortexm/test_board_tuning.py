"""Cortex-M tuning (compile/backends/cortexm/tuning.py): the schedule choices of the kernel
calls, the benchmark firmware that measures them on the QEMU boards, the database a build
takes its choices from, and the errors a user can make."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from compile.backends.cortexm import nnlib, project, tuning
from compile.backends.cortexm.graph import lower_model
from compile.llvm_cpu.tuning import RECORDS, WORKLOADS
from compile.paths import REPO
from compile.pipeline import compile_model
from compile.targets import get_target
from tests.compile.backends.cortexm.test_nnlib import kernel_cases
from tests.factory import build_tflite

M4 = tvm.target.Target({"kind": "c", "mcpu": "cortex-m4"})
M55 = tvm.target.Target({"kind": "c", "mcpu": "cortex-m55"})


def _task(layer: nnlib.ConvLayer, target=M4) -> tuning.Task:
    s = layer.shape
    prim = nnlib.reference(layer)
    return tuning.Task(f"sg_k0_{layer.kind}", prim,
                       [layer.weights, layer.bias, layer.mult, layer.rshift],
                       (1, s["ih"], s["iw"], s["c"]), (1, s["oh"], s["ow"], s["o"]), 0,
                       nnlib.knob_choices(prim, tuning.widens(target)))


def test_board_cores():
    assert tuning.widens(tuning.ms_target(get_target("mps2-an386")))
    assert tuning.widens(tuning.ms_target(get_target("mps2-an500")))
    assert not tuning.widens(tuning.ms_target(get_target("mps3-an547")))     # Helium


def test_default_database_follows_the_kernel_library(tmp_path, monkeypatch):
    """Measurements of other kernels say nothing about these: another sg_nn.h, another
    default database; an explicit --tuning-db stays as given."""
    import shutil

    target = get_target("mps2-an386")
    before = tuning.options({}, "ab" * 32, target)[0]
    for name in ("sg_nn.h", "sg_kernels.h"):
        shutil.copy(project.FIRMWARE / name, tmp_path / name)
    monkeypatch.setattr(project, "FIRMWARE", tmp_path)
    assert tuning.options({}, "ab" * 32, target)[0] == before
    (tmp_path / "sg_nn.h").write_text((tmp_path / "sg_nn.h").read_text() + "\n")
    assert tuning.options({}, "ab" * 32, target)[0] != before
    assert tuning.options({"tuning_db": "D"}, "ab" * 32, target)[0].name == "D"


def test_choices_default_first_and_distinct():
    for layer, _ in kernel_cases():
        prim = nnlib.reference(layer)
        for target in (M4, M55):
            choices = nnlib.knob_choices(prim, tuning.widens(target))
            assert choices[0] == {f: layer.shape[f] for f in nnlib.KNOB_FIELDS}
            assert len({tuple(sorted(c.items())) for c in choices}) == len(choices)
            if layer.kind == "conv":
                assert len(choices) == (2 if target is M4 else 1)
            elif nnlib.quad_kernel(layer.shape):
                assert len(choices) == 1                 # its order: no other fits the plan
            elif nnlib.band_window(layer.shape):
                assert choices[-1]["rows"] == 0          # the plain loop
                assert len(choices) > 2
            else:
                assert len(choices) == 1                 # 5x5: the plain loop only


def test_with_knobs_before_expected():
    """A choice changes the call's shape fields and scratch, not its computation."""
    layer = next(lay for lay, _ in kernel_cases()
                 if lay.kind == "dwconv" and nnlib.band_window(lay.shape))
    before = nnlib.reference(layer)
    s = dict(layer.shape, cb=1, rows=0)
    after = nnlib.with_knobs(before, {"widen": 0, "cb": 1, "rows": 0})
    assert [int(v) for v in after.attrs["sg.shape"]] == [s[f] for f in nnlib.SHAPE_FIELDS]
    assert int(after.attrs["sg.scratch"]) == 0 < int(before.attrs["sg.scratch"])
    assert tvm_ffi.structural_equal(after.body, before.body)
    wide = nnlib.with_knobs(before, nnlib.knob_choices(before, True)[-2])
    assert int(wide.attrs["sg.scratch"]) == nnlib.scratch_bytes(
        "dwconv", nnlib.shape_of(wide)) > 0


def test_candidate_trace_carries_the_choice():
    task = _task(kernel_cases()[5][0])
    for index in range(len(task.choices)):
        sch = tuning.candidate(task, index)
        assert tuning.choice_of(sch.mod) == index
        decisions = [int(d) for d in sch.trace.decisions.values()]
        assert decisions == [index]
        record = ms.database.TuningRecord(sch.trace, ms.database.Workload(task.workload))
        assert tuning.choice_of_record(record) == index


@pytest.mark.emulator
@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547"])
def test_every_choice_is_bit_exact_on_the_board(board):
    """Each choice of each kernel case, as its benchmark firmware on the QEMU board, against
    the call's TIR built for this machine (odd channel counts, -128, stride 2, both
    requantizations): all measured, none wrong."""
    target = get_target(board)
    ms_target = tuning.ms_target(target)
    tasks = [_task(layer, ms_target) for layer, _ in kernel_cases()]
    todo = [(t, i) for t in tasks for i in range(len(t.choices))]
    builder, runner, _, unit = tuning.runners(target, {})
    assert unit == "estimated cycles"
    measured = tuning.measure(todo, builder, runner, ms_target, None)
    assert [m.error for m in measured] == [None] * len(todo)
    assert all(m.secs > 0 for m in measured)


@pytest.mark.emulator
def test_link_runner_measures_over_the_board_link():
    """``tune_port``: the benchmark's link firmware, its input sent over the link, the count
    read back, the candidates spread over two boards (``qemu``: QEMU boards with their UART
    on a socket, instructions)."""
    target = get_target("mps2-an386")
    task = _task(kernel_cases()[6][0])
    builder, runner, where, unit = tuning.runners(target, {"tune_port": "qemu,qemu"})
    assert isinstance(runner, tuning.LinkRunner) and unit == "instructions"
    assert where == "over the link on 2 x mps2-an386 (QEMU)"
    todo = [(task, i) for i in range(len(task.choices))]
    measured = tuning.measure(todo, builder, runner, M4, None)
    assert [m.error for m in measured] == [None] * len(todo)
    assert all(m.secs > 0 for m in measured)


@pytest.mark.emulator
def test_a_wrong_candidate_is_rejected_not_recorded_fast(tmp_path, monkeypatch):
    """A choice whose firmware computes a wrong output (here: the output zero point off by
    one) fails on the comparison with the reference; the database keeps it without a run
    time, so a build never takes it."""
    target = get_target("mps2-an386")
    task = _task(kernel_cases()[5][0])
    real = tuning.apply_choice

    def sabotaged(prim, index, tgt):
        prim = real(prim, index, tgt)
        if index != 1:
            return prim
        s = nnlib.shape_of(prim)
        s["zy"] += 1
        return prim.with_attr("sg.shape", [s[f] for f in nnlib.SHAPE_FIELDS])

    monkeypatch.setattr(tuning, "apply_choice", sabotaged)
    db = ms.database.JSONDatabase(str(tmp_path / WORKLOADS), str(tmp_path / RECORDS),
                                  allow_missing=True)
    builder, runner, _, _ = tuning.runners(target, {})
    good, bad = tuning.measure([(task, 0), (task, 1)], builder, runner, M4, db)
    assert good.error is None and good.secs > 0
    assert bad.secs is None and bad.error.startswith("wrong result: ")
    assert tuning.measured_choices(db, task) == {0: good.secs, 1: None}
    assert len(db.get_top_k(db.commit_workload(task.workload), 10)) == 1


def _build(*args, env=None):
    return subprocess.run([sys.executable, "compile/build.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.emulator
def test_small_model_tunes_then_reuses_its_database(tmp_path):
    """A few trials on the QEMU board into a new database; a second build reuses it without
    measuring; both bundles record it and their firmware is the same."""
    model = build_tflite("small_cnn", tmp_path)
    db = tmp_path / "db"
    first = _build("--target", "mps2-an386", "--model", model, "--tune-trials", 6,
                   "--tuning-db", db, "--out", tmp_path / "b1")
    assert first.returncode == 0, first.stderr
    assert "measuring 6 on mps2-an386 (QEMU) in estimated cycles" in first.stderr
    assert len((db / RECORDS).read_text().splitlines()) == 6
    second = _build("--target", "mps2-an386", "--model", model, "--tune-trials", 6,
                    "--tuning-db", db, "--out", tmp_path / "b2")
    assert second.returncode == 0, second.stderr
    assert "no re-tuning" in second.stderr and "measuring" not in second.stderr
    assert len((db / RECORDS).read_text().splitlines()) == 6
    for bundle in ("b1", "b2"):
        tuned = json.loads((tmp_path / bundle / "bundle.json").read_text())["tuned"]
        assert tuned["tuning_trials"] == 6 and tuned["unit"] == "estimated cycles"
    assert ((tmp_path / "b1/firmware/model.c").read_text()
            == (tmp_path / "b2/firmware/model.c").read_text())


@pytest.mark.emulator
def test_tuned_choices_keep_the_model_bit_exact_and_the_arena(tmp_path):
    """A database that makes every call's other choices faster than its default: the build
    takes them (the largest band excepted, which would grow the arena), and the firmware
    stays bit-exact with LiteRT."""
    model = build_tflite("small_cnn", tmp_path)
    target = get_target("mps2-an386")
    mod = compile_model(model)[0]
    graph = lower_model(mod)
    tasks = tuning.extract_tasks(graph, tuning.ms_target(target))
    assert {t.prim.attrs["sg.nn"] for t in tasks} == {"conv", "dwconv"}
    (tmp_path / "db").mkdir()
    db = ms.database.JSONDatabase(str(tmp_path / "db" / WORKLOADS),
                                  str(tmp_path / "db" / RECORDS), allow_missing=True)
    grows = next(t for t in tasks if t.prim.attrs["sg.nn"] == "dwconv")
    for k, task in enumerate(tasks):
        wl = db.commit_workload(task.workload)
        args = ms.arg_info.ArgInfo.from_prim_func(task.prim)
        other = (max(range(1, len(task.choices)), key=lambda i: nnlib.scratch_bytes(
            "dwconv", {**nnlib.shape_of(task.prim), **task.choices[i]}))
            if task is grows else 1 + k % (len(task.choices) - 1))
        for index, secs in ((0, 1.0), (other, 0.5)):
            db.commit_tuning_record(ms.database.TuningRecord(
                tuning.candidate(task, index).trace, wl, [secs], tuning.ms_target(target), args))
    built = _build("--target", "mps2-an386", "--model", model, "--tuning-db", tmp_path / "db",
                   "--out", tmp_path / "b")
    assert built.returncode == 0, built.stderr
    assert f"not taking {grows.name}'s tuned choice" in built.stderr
    manifest = json.loads((tmp_path / "b/bundle.json").read_text())
    assert len(manifest["tuned"]["kernels"]) == len(tasks) - 1
    assert manifest["arena_bytes"] == project.plan_memory(graph)[0].arena_bytes
    check = subprocess.run([sys.executable, "compile/validate.py", "--target", "mps2-an386",
                            "--model", model, "--bundle", tmp_path / "b", "--n", "4"],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert check.returncode == 0 and "BIT-EXACT" in check.stdout, check.stdout + check.stderr


@pytest.mark.parametrize("setup, message", [
    ("file", r"tuning database .*: .* is not a directory"),
    ("proc", r"tuning database /proc/sg-db is not writable"),
    ("damaged", r"tuning database .* is damaged \(line 1 of database_tuning_record.json is "
                r"not JSON\): move it away"),
    ("rpc", r"--rpc-tracker is for Linux boards"),
    ("port", r"tune_port: mps2-an386 is a QEMU board"),
    ("board", r"unknown target 'no-such-board'"),
])
def test_bad_input_is_one_error_line(tmp_path, setup, message):
    import re

    model = build_tflite("conv", tmp_path)
    db = tmp_path / "db"
    extra, target = [], "mps2-an386"
    if setup == "file":
        (tmp_path / "plain").write_text("x")
        db = tmp_path / "plain" / "db"
    elif setup == "proc":
        db = "/proc/sg-db"
    elif setup == "damaged":
        db.mkdir()
        (db / RECORDS).write_text("not json\n[1]\n")
        (db / WORKLOADS).write_text("")
    elif setup == "rpc":
        extra = ["--rpc-tracker", "127.0.0.1:9190", "--rpc-key", "x"]
    elif setup == "port":
        extra = ["--opt", "tune_port=/dev/ttyACM0"]
    elif setup == "board":
        target = "no-such-board"
    def files():     # the lock beside a database is no data
        return sorted(p.name for p in tmp_path.rglob("*") if not p.name.endswith(".lock"))

    before = files()
    out = _build("--target", target, "--model", model, "--tune-trials", 2, "--tuning-db", db,
                 "--out", tmp_path / "b", *extra)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert re.search(message, lines[0]), lines[0]
    assert files() == before                                      # nothing written
    if setup == "damaged":
        assert (db / RECORDS).read_text() == "not json\n[1]\n"
