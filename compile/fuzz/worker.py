"""Checking mutants in worker processes that the parent may kill (a hang) or lose (a signal).

A worker takes (model path, seed) tasks from a pipe, writes the mutant, runs it through
``compile/build.py`` the way a user would (``cli.main``: a user error is one ``error:`` line
and exit 2, anything else a traceback), and, when it compiled, runs LiteRT's reference kernels
and the bundle on a few inputs and compares them bit for bit.  It reports each phase it enters,
so a worker that dies or stops answering is charged to the phase it was in.

Statuses (``OK`` are the fine ones):

* ``exact``     compiled, and the outputs equal LiteRT's reference bit for bit;
* ``refused``   one ``error:`` line, exit 2;
* ``traceback`` an exception that is not a user error escaped;
* ``noisy``     refused, but more than the one ``error:`` line reached stderr;
* ``mismatch``  compiled, outputs differ from the reference;
* ``accepted``  compiled a file that LiteRT refuses or cannot run (we should have refused it);
* ``crash``     the worker died of a signal (in our compiler or a native library);
* ``hang``      the mutant took longer than the time limit.
"""
from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
from pathlib import Path

OK = ("exact", "refused")
STATUSES = ("exact", "refused", "traceback", "noisy", "mismatch", "accepted", "crash", "hang")
# A mutant's huge shape must be refused, not allocated: past this the worker's allocations
# fail with MemoryError (a traceback) instead of taking the machine's memory.
ADDRESS_SPACE_BYTES = 12 << 30


def mutant_bytes(model: Path, seed: int, kind: str | None = None) -> tuple[bytes, str, str]:
    """(bytes, kind, what) of mutant ``seed`` of ``model``."""
    from compile.fuzz.mutate import layout, mutate

    buf = Path(model).read_bytes()
    return mutate(buf, _layout(model, buf, layout), seed, kind)


_LAYOUTS: dict = {}


def _layout(model: Path, buf: bytes, layout):
    key = (str(model), len(buf))
    if key not in _LAYOUTS:
        _LAYOUTS[key] = layout(buf)
    return _LAYOUTS[key]


@contextlib.contextmanager
def captured_stderr():
    """Everything written to stderr inside, by Python or by native code (TVM's LOG lines go
    to file descriptor 2), as the list it yields, filled on exit."""
    from compile.frontend import native_stderr

    lines: list[str] = []
    text = io.StringIO()
    try:
        with native_stderr() as native, contextlib.redirect_stderr(text):
            yield lines
    finally:
        lines += native + text.getvalue().strip().splitlines()


def check(path: Path, work: Path, target: str, n_inputs: int, seed: int, phase) -> dict:
    """Status and detail of one mutant file; ``phase(name)`` is called on entering each phase."""
    from compile import build, cli
    from compile.backends import run_bundle
    from compile.bundle import model_info, read_manifest
    from compile.difftest.check import where
    from compile.frontend import example_input
    from compile.targets import get_target
    from compile.measure import compare, run_litert

    out = work / f"bundle-{seed}"
    phase("build")
    try:
        with captured_stderr() as lines, contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(build.run, ["--model", str(path), "--target", target,
                                        "--out", str(out)])
    except BaseException as err:  # noqa: BLE001  (what the CLI would show as a traceback)
        return {"status": "traceback", "detail": where(err)}
    if code == cli.EXIT_USAGE:
        if len(lines) == 1 and lines[0].startswith("error: "):
            return {"status": "refused", "detail": lines[0][7:][:300]}
        return {"status": "noisy", "detail": f"exit 2 with {len(lines)} lines on stderr: "
                                             f"{lines[:3]!r}"[:400]}
    if code != 0:
        return {"status": "traceback", "detail": f"exit {code} with stderr {lines[-3:]!r}"}
    info = model_info(read_manifest(out, get_target(target)))   # what the build read
    x = example_input(info, n_inputs, seed)
    try:
        phase("reference")
        reference = run_litert(path, x, reference=True)
    except Exception as err:  # noqa: BLE001  (LiteRT refuses what we compiled)
        return {"status": "accepted", "detail": f"LiteRT: {where(err)}"}
    phase("run")
    try:
        actual, _ = run_bundle(out, target, x, {"estimate": "0"})
    except BaseException as err:  # noqa: BLE001
        return {"status": "traceback", "detail": f"running the bundle: {where(err)}"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    got = compare(reference, actual)
    if got["bit_exact"]:
        return {"status": "exact", "detail": ""}
    return {"status": "mismatch", "detail": got.get("reason", f"{got['equal_values_pct']:.1f} "
                                                     "% of values equal")}


def serve(conn, work: str, target: str, n_inputs: int) -> None:
    """Worker process main loop: (model, seed) in, ("phase", name) ... ("done", result) out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = ADDRESS_SPACE_BYTES if hard == resource.RLIM_INFINITY else min(hard, ADDRESS_SPACE_BYTES)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    while True:
        task = conn.recv()
        if task is None:
            return
        model, seed = task
        data, kind, what = mutant_bytes(Path(model), seed)
        conn.send(("mutant", kind, what))
        path = work_dir / f"mutant-{seed}.tflite"
        path.write_bytes(data)
        try:
            result = check(path, work_dir, target, n_inputs, seed,
                           lambda name: conn.send(("phase", name)))
        finally:
            path.unlink(missing_ok=True)
        conn.send(("done", result))
