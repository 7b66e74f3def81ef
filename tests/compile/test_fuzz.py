"""Tests of the front end's fuzzing (compile/fuzz) and of what the front end refuses.

Hostile numbers are written into real factory models at the positions ``compile.fuzz.mutate``
finds; each must be refused as one ``error:`` line (exit 2), never a traceback.  A seeded
batch of mutants goes through the fuzzer's own worker processes as ``make test``'s share of
``python -m compile.fuzz``.
"""
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compile.errors import ModelError
from compile.frontend import read_model
from compile.fuzz.__main__ import run_mutants, summary
from compile.fuzz.mutate import EDGES, KINDS, layout, mutate
from compile.fuzz.worker import OK
from compile.paths import REPO
from tests.factory import build_tflite

CORPUS = ("small_cnn", "identity_block", "concat", "split")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "factory_models"   # shared on-disk cache
    return {name: build_tflite(name, out) for name in CORPUS}


def patched(model: Path, tmp_path: Path, field: str, value) -> Path:
    """``model`` with the first field whose name ends with ``field`` set to ``value``."""
    buf = bytearray(model.read_bytes())
    pos, kind, _ = next(f for f in layout(bytes(buf)).fields if f[2].endswith(field))
    struct.pack_into(EDGES[kind][0], buf, pos, value)
    out = tmp_path / f"patched-{field.replace(' ', '_')}.tflite"
    out.write_bytes(bytes(buf))
    return out


def test_mutants_are_seeded_and_each_kind_changes_the_file(models):
    buf = models["small_cnn"].read_bytes()
    lay = layout(buf)
    assert lay.data and all(0 < s and s + n <= len(buf) for s, n in lay.data)   # weights
    names = {name.split(" set")[0] for _, _, name in lay.fields}
    assert any("scale[" in n for n in names) and any("zero_point[" in n for n in names)
    assert any("shape[" in n for n in names) and any("input[" in n for n in names)
    for kind in KINDS:
        a, b = mutate(buf, lay, 7, kind), mutate(buf, lay, 7, kind)
        assert a == b and a[1] == kind
        assert a[0] != buf, kind
    data = [(s, s + n) for s, n in lay.data]
    for seed in range(20):   # flip-data only touches weights, flip-table never does
        for kind, inside in (("flip-data", True), ("flip-table", False)):
            mutant = mutate(buf, lay, seed, kind)[0]
            changed = [i for i, (x, y) in enumerate(zip(buf, mutant)) if x != y]
            assert all(any(s <= i < e for s, e in data) == inside for i in changed)


@pytest.mark.parametrize("field, value, message", [
    ("scale[0]", float("nan"), "scale nan; scales must be finite and positive"),
    ("scale[0]", float("inf"), "scale inf"),
    ("scale[0]", 0.0, "scale 0.0"),
    ("scale[0]", -0.5, "scale -0.5"),
    ("zero_point[0]", 128, "zero point 128, outside int8's"),
    ("zero_point[0]", -(2**63), "zero point"),
    ("shape[1]", 0, "dimensions must be positive"),
    ("shape[1]", -1, "dimensions must be positive"),
    ("shape[1]", 2**31 - 1, "elements, more than"),
    ("quantized_dimension", 2, "scales along dimension 2"),
    ("input[0]", 10_000, "refers to a missing tensor"),
])
def test_hostile_numbers_are_refused(models, tmp_path, field, value, message):
    # the first tensor with the field: per-channel conv weights for quantized_dimension
    model = models["small_cnn"]
    lay = layout(model.read_bytes())
    candidates = [f for f in lay.fields if f[2].endswith(field)]
    if field == "quantized_dimension":
        scales = {f[2].split(" scale")[0] for f in lay.fields if f[2].endswith("scale[1]")}
        candidates = [f for f in candidates if f[2].rsplit(" ", 1)[0] in scales]
    buf = bytearray(model.read_bytes())
    pos, kind, _ = candidates[0]
    struct.pack_into(EDGES[kind][0], buf, pos, value)
    path = tmp_path / "hostile.tflite"
    path.write_bytes(bytes(buf))
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_model(path)


def test_an_operator_reading_a_later_tensor_is_refused(models, tmp_path):
    model = models["small_cnn"]
    lay = layout(model.read_bytes())
    # operator 0's first input rewired to the last operator's output
    last_out = max((f for f in lay.fields if " output[0]" in f[2] and "operator" in f[2]),
                   key=lambda f: int(f[2].split()[1]))
    buf = model.read_bytes()
    value = struct.unpack_from("<i", buf, last_out[0])[0]
    path = patched(model, tmp_path, "operator 0 input[0]", value)
    with pytest.raises(ModelError, match="reads tensor .* before anything writes it"):
        read_model(path)


def test_nan_scale_through_build_is_one_error_line(models, tmp_path):
    path = patched(models["small_cnn"], tmp_path, "scale[0]", float("nan"))
    proc = subprocess.run([sys.executable, str(REPO / "compile" / "build.py"), "--target", "host",
                           "--model", str(path), "--out", str(tmp_path / "bundle")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "scale nan" in lines[0]
    assert not (tmp_path / "bundle").exists()


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edge_value_in_any_field_is_compiled_or_refused(models, tmp_path, data):
    """The front end on hypothesis-drawn (field, edge value) pairs: a ModelError or a model,
    never another exception."""
    model = models[data.draw(st.sampled_from(CORPUS))]
    buf = bytearray(model.read_bytes())
    pos, kind, name = data.draw(st.sampled_from(layout(bytes(buf)).fields))
    fmt, edges = EDGES[kind]
    struct.pack_into(fmt, buf, pos, data.draw(st.sampled_from(edges)))
    path = tmp_path / "edge.tflite"
    path.write_bytes(bytes(buf))
    try:
        read_model(path)
    except ModelError:
        pass


@pytest.mark.timeout(900)
def test_seeded_mutants_compile_bit_exact_or_are_refused(models, tmp_path):
    """``python -m compile.fuzz``'s check on 240 seeded mutants of four small models, in its
    worker processes: every one ends exact or refused (no traceback, signal, hang, wrong
    answer or file LiteRT refuses)."""
    corpus = [models[name] for name in CORPUS]
    results = run_mutants(corpus, range(240), "host", jobs=1, timeout=120, n_inputs=2,
                          work=tmp_path)
    report = summary(results)
    bad = [r for r in results if r["status"] not in OK]
    assert not bad, bad[:5]
    assert report["mutants"] == 240
    # both outcomes occur, and every kind of mutation was drawn
    assert report["counts"]["exact"] >= 20 and report["counts"]["refused"] >= 60
    assert set(report["by_kind"]) == set(KINDS)


def misbehaving_server(conn, work, target, n_inputs):
    """A worker loop that hangs on seed 0, dies of SIGSEGV on seed 1, dies while LiteRT runs on
    seed 2 and answers the rest."""
    import os
    import signal
    import time

    while (task := conn.recv()) is not None:
        seed = task[1]
        conn.send(("mutant", "field", f"seed {seed}"))
        conn.send(("phase", "reference" if seed == 2 else "build"))
        if seed == 0:
            time.sleep(600)
        if seed in (1, 2):
            os.kill(os.getpid(), signal.SIGSEGV)
        conn.send(("done", {"status": "refused", "detail": "fine"}))


def test_hangs_and_signals_are_outcomes_and_the_workers_come_back(tmp_path):
    results = run_mutants([Path("m.tflite")], [0, 1, 2, 3, 4], "host", jobs=2, timeout=5,
                          n_inputs=1, work=tmp_path, server=misbehaving_server)
    got = {r["seed"]: (r["status"], r["detail"]) for r in results}
    assert got[0] == ("hang", "no result in phase build before the limit")
    assert got[1] == ("crash", "the worker died (signal 11) in phase build")
    assert got[2] == ("accepted", "LiteRT died (signal 11)")
    assert got[3] == got[4] == ("refused", "fine")
