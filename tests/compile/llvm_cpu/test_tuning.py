"""MetaSchedule tuning: database per (model, target) reused and resumed, RPC tracker on loopback,
bounded errors for unreachable trackers / unknown keys, corrupt databases ignored."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tvm

from compile.llvm_cpu import tuning
from compile.llvm_cpu.build import compile_for_target
from compile.pipeline import compile_model
from compile.measure import run_litert
from compile.targets import get_target
from tests.factory import build_tflite, random_int8_inputs


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    path = build_tflite("dense", tmp_path_factory.mktemp("tunemodels"))
    mod, info = compile_model(path)
    return path, mod, info


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(built, x: np.ndarray) -> np.ndarray:
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    return np.stack([vm["main"](tvm.runtime.tensor(s[None])).numpy()[0] for s in x])


def test_database_reused_and_resumed(dense, tmp_path):
    path, mod, info = dense
    target = get_target("host")
    db = tmp_path / "db"
    logs: list[str] = []

    ex, entry = compile_for_target(mod, info, target,
                                          {"tune_trials": 2, "tuning_db": str(db)}, logs.append)
    first = tuning.searched_trials(db)
    assert entry["tuned"] and first >= 2
    assert any("tune: task 1/" in m and "best" in m for m in logs), logs
    # every kernel's default schedule was measured first: the search starts from it
    assert tuning.seeded_trials(db) >= 1 and tuning.count_trials(db) == first + tuning.seeded_trials(db)
    assert any("measured the default schedules" in m for m in logs), logs
    x = random_int8_inputs(path, 4, seed=1)
    np.testing.assert_array_equal(_run(ex, x), run_litert(path, x))

    logs.clear()   # more trials asked: tuning resumes on the same database
    compile_for_target(mod, info, target, {"tune_trials": first + 2, "tuning_db": str(db)},
                              logs.append)
    assert any(f"resuming at {first}" in m for m in logs), logs
    second = tuning.searched_trials(db)
    assert second >= first + 2

    logs.clear()   # same request again: reused, nothing measured
    ex, entry = compile_for_target(mod, info, target,
                                          {"tune_trials": second, "tuning_db": str(db)},
                                          logs.append)
    assert any("no re-tuning" in m for m in logs) and tuning.searched_trials(db) == second
    assert not any("tune: task" in m for m in logs)
    assert entry == {"tuned": True, "tuning_db": str(db), "tuning_trials": second}

    logs.clear()   # a plain build finds the database and says so
    ex, entry = compile_for_target(mod, info, target, {"tuning_db": str(db)}, logs.append)
    assert entry["tuned"] and any("using tuning database" in m for m in logs)
    np.testing.assert_array_equal(_run(ex, x), run_litert(path, x))


def test_database_key_is_model_and_full_target(dense):
    _, _, info = dense
    rpi4, rpi5 = get_target("rpi4").tvm, get_target("rpi5").tvm
    assert tuning.default_db_dir(info.sha256, rpi4) != tuning.default_db_dir(info.sha256, rpi5)
    assert tuning.default_db_dir(info.sha256, rpi4) == tuning.default_db_dir(info.sha256,
                                                                               dict(rpi4))
    assert tuning.default_db_dir("0" * 64, rpi4) != tuning.default_db_dir(info.sha256, rpi4)


def test_corrupt_database_is_ignored_with_warning(dense, tmp_path):
    _, mod, info = dense
    db = tmp_path / "db"
    db.mkdir()
    (db / tuning.WORKLOADS).write_text('["not a workload"\n')
    (db / tuning.RECORDS).write_text("{truncated\n")
    logs: list[str] = []
    ex, entry = compile_for_target(mod, info, get_target("host"), {"tuning_db": str(db)},
                                          logs.append)
    assert entry == {"tuned": False}
    assert any(m.startswith("warning: tuning database") for m in logs), logs


@pytest.mark.parametrize("opts, message", [
    ({"tune_trials": "many"}, "whole number"),
    ({"tune_trials": -3}, ">= 0"),
    ({"rpc_tracker": "no-port", "rpc_key": "k"}, "HOST:PORT"),
    ({"rpc_tracker": "127.0.0.1:9190"}, "--rpc-key"),
    ({"rpc_key": "rpi4"}, "rpc_tracker"),
])
def test_bad_tuning_options(opts, message):
    with pytest.raises(tuning.TuningError, match=message):
        tuning.options(opts, "0" * 64, {"kind": "llvm"})


def test_unreachable_tracker_fails_fast():
    start = time.monotonic()
    with pytest.raises(tuning.TuningError, match="cannot reach the RPC tracker"):
        tuning.check_tracker(tuning.RPCSpec("127.0.0.1", _free_port(), "rpi4"))
    assert time.monotonic() - start < 2 * tuning.CONNECT_TIMEOUT_S


def test_silent_port_is_not_taken_for_a_tracker():
    """A listener that never answers: bounded by CONNECT_TIMEOUT_S, no hang."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        spec = tuning.RPCSpec("127.0.0.1", server.getsockname()[1], "rpi4")
        start = time.monotonic()
        with pytest.raises(tuning.TuningError, match="does not answer as a TVM RPC tracker"):
            tuning.check_tracker(spec)
        assert time.monotonic() - start < 3 * tuning.CONNECT_TIMEOUT_S


@pytest.fixture
def rpc_tracker():
    """A TVM RPC tracker and one server with key host-test, both on 127.0.0.1."""
    port, server_port = _free_port(), _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host",
                               "127.0.0.1", "--port", str(port), "--port-end", str(port + 1),
                               "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
             "--key", "host-test", "--host", "127.0.0.1", "--port", str(server_port),
             "--port-end", str(server_port + 10),
             "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        spec = tuning.RPCSpec("127.0.0.1", port, "host-test")
        deadline = time.monotonic() + 90
        while True:   # the server needs a few seconds (import tvm) to register
            try:
                tuning.check_tracker(spec)
                break
            except tuning.TuningError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield spec
    finally:
        for proc in procs:   # each is a session leader: its TVM popen workers go with it
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def test_rpc_tuning_on_loopback(dense, rpc_tracker, tmp_path):
    _, mod, _ = dense
    logs: list[str] = []
    tuning.tune(mod, get_target("host").tvm, 2, tmp_path / "db", rpc=rpc_tracker, log=logs.append)
    assert tuning.searched_trials(tmp_path / "db") >= 2
    assert tuning.seeded_trials(tmp_path / "db") >= 1   # measured through the RPC server too
    assert any("measuring on host-test via 127.0.0.1" in m for m in logs), logs
    progress = [m for m in logs if m.startswith("tune: task")]
    assert progress and all("failed" not in m for m in progress), progress

    with pytest.raises(tuning.TuningError, match="no RPC server with key 'rpi4'"):
        tuning.check_tracker(tuning.RPCSpec(rpc_tracker.host, rpc_tracker.port, "rpi4"))


def test_bench_host_tunes_in_a_child_process(dense, tmp_path):
    """compile/bench.py --target host --tune-trials N: tuning runs in a process of its own (timed
    in the tuning process, the tuned build ran a third slower), then untuned and tuned are timed
    here; an unreachable tracker is one line from the child."""
    from compile.errors import BackendError
    from compile.bench import bench_host

    path, _, _ = dense
    db = tmp_path / "db"
    result = bench_host(path, get_target("host"), 1, 5, {"tune_trials": 2, "tuning_db": str(db)})
    assert tuning.searched_trials(db) >= 2 and result["tuning_trials"] >= 2
    assert result["tvm-untuned"] > 0 and result["tvm-tuned"] > 0 and result["litert-xnnpack"] > 0
    with pytest.raises(BackendError, match="tracker") as err:
        bench_host(path, get_target("host"), 1, 5,
                   {"tune_trials": 2, "tuning_db": str(tmp_path / "db2"),
                    "rpc_tracker": f"127.0.0.1:{_free_port()}", "rpc_key": "none"})
    assert "\n" not in str(err.value)


def _repaired(tmp_path, workloads: str, records: str) -> tuple:
    """A database with these files after ``repair_database``: (its dir, the warnings)."""
    db = tmp_path / "db"
    db.mkdir()
    (db / tuning.WORKLOADS).write_text(workloads)
    (db / tuning.RECORDS).write_text(records)
    logs: list[str] = []
    tuning.repair_database(db, logs.append)
    return db, logs


def test_cut_last_line_is_dropped_and_the_records_kept(tmp_path):
    """A run killed mid-append leaves a cut last line: only that line goes, with a warning."""
    db, logs = _repaired(tmp_path, '["w0"]\n["w1"]\n', '[0, {"r": 1}]\n[1, {"r": 2}]\n[1, {"r"')
    assert (db / tuning.RECORDS).read_text() == '[0, {"r": 1}]\n[1, {"r": 2}]\n'
    assert (db / tuning.WORKLOADS).read_text() == '["w0"]\n["w1"]\n'
    assert logs == [f"warning: tuning database {db}: dropped the cut last line of "
                    f"{tuning.RECORDS} (a run stopped while writing it); kept 2 records"]


def test_whole_last_record_without_its_newline_is_kept_and_ended(tmp_path):
    """A run killed between a record and its newline: the record stays, the line is ended, so
    the next run's first record does not land on the same line (which made the database look
    damaged in the middle and set aside)."""
    db, logs = _repaired(tmp_path, '["w0"]\n', '[0, {"r": 1}]\n[0, {"r": 2}]')
    assert (db / tuning.RECORDS).read_text() == '[0, {"r": 1}]\n[0, {"r": 2}]\n'
    assert logs == []


def test_damaged_database_is_set_aside_not_deleted(tmp_path):
    records = '[0, {"r": 1}]\n{garbage\n[0, {"r": 3}]\n'
    db, logs = _repaired(tmp_path, '["w0"]\n', records)
    assert not db.exists()
    [aside] = tmp_path.glob("db.damaged-*")
    assert (aside / tuning.RECORDS).read_text() == records
    assert str(aside) in logs[0] and "line 2" in logs[0]


def test_second_tuning_run_on_one_database_is_refused(tmp_path):
    db = tmp_path / "db"
    with tuning.locked(db):
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from compile.llvm_cpu import tuning\n"
             "try:\n    tuning.locked(sys.argv[1]).__enter__()\n"
             "except tuning.TuningError as e:\n    print(e); sys.exit(3)", str(db)],
            capture_output=True, text=True, timeout=120)
    assert child.returncode == 3 and "another run is tuning into" in child.stdout, child.stderr


def test_killed_tuning_run_keeps_its_records_and_resumes(dense, tmp_path):
    """kill -9 a tuning run mid-search: every record it wrote is still there when the next run
    resumes, and the resumed run adds to them."""
    path, _, _ = dense
    db = tmp_path / "db"
    script = ("import sys\nfrom compile.llvm_cpu.build import compile_for_target\n"
              "from compile.pipeline import compile_model\nfrom compile.targets import get_target\n"
              "mod, info = compile_model(sys.argv[1])\n"
              "compile_for_target(mod, info, get_target('host'), "
              "{'tune_trials': 200, 'tuning_db': sys.argv[2]}, print)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(path), str(db)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while tuning.searched_trials(db) < 3 and child.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert child.poll() is None, "the tuning run ended before it could be killed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    written = [ln for ln in (db / tuning.RECORDS).read_text().splitlines(keepends=True)]
    complete = [ln for ln in written if ln.endswith("\n")]
    assert len(complete) >= 3
    _, mod, info = dense
    logs: list[str] = []
    compile_for_target(mod, info, get_target("host"),
                       {"tune_trials": tuning.searched_trials(db) + 2, "tuning_db": str(db)},
                       logs.append)
    after = (db / tuning.RECORDS).read_text()
    assert after.startswith("".join(complete)) and after.count("\n") > len(complete), logs
    assert any("resuming at" in m for m in logs), logs
