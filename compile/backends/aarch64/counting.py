"""Instructions and estimated cycles per inference under qemu-aarch64, from our QEMU trace plugin
(``compile.cyclemodel.plugin``): each program runs the model K and 2K times in the emulated
userland and the difference / K is one inference (start-up, imports and loading cancel out).
With the board's ``[timing]`` the executed blocks of that difference are costed on the board's
core (``compile.cyclemodel``): estimated cycles, ms at the board's clock, bytes loaded and stored.
Used for the TVM bundle and for LiteRT's aarch64 wheel (XNNPACK and its built-in kernels).
QEMU itself models no timing: instructions are counted, cycles are estimated.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from compile.backends.aarch64.userland import run_in_userland
from compile.cyclemodel import estimate, timing_of
from compile.cyclemodel.qemu import plugin, plugin_options
from compile.cyclemodel.trace import Trace, parse
from compile.errors import BackendError

# LiteRT inside the emulated userland: K invokes of one sample (argv: model, K, resolver).
LITERT_SCRIPT = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
model, k, resolver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
it = Interpreter(model_path=model, num_threads=1,
                 experimental_op_resolver_type=getattr(OpResolverType, resolver))
it.allocate_tensors()
inp = it.get_input_details()[0]
it.set_tensor(inp["index"], np.load(sys.argv[4]).reshape(inp["shape"]))
for _ in range(k):
    it.invoke()
"""
LITERT_RESOLVERS = {"litert-xnnpack": "AUTO",
                    "litert-builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}


EVERYWHERE = {"memory": (0, 2**64 - 1)}     # traffic: one region, the whole address space


def counted_run(target, script: list[str], workdir: Path, blocks: bool = False) -> str:
    """Run ``python3.11 <script...>`` in the userland under the trace plugin; what it wrote
    (``instructions N``, and with ``blocks`` the executed blocks and their memory traffic)."""
    out = workdir / "count.txt"
    out.unlink(missing_ok=True)
    proc = run_in_userland(target, script, threads=1, plugin=[
        str(plugin()), *plugin_options(out, blocks=blocks, mem=blocks,
                                       regions=EVERYWHERE if blocks else None)])
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise BackendError(f"emulated run failed (exit {proc.returncode}): {tail}")
    return out.read_text()


def zero_sample(bundle_dir: Path) -> np.ndarray:
    """One all-zero input shaped like the bundle's model input."""
    spec = json.loads((Path(bundle_dir) / "bundle.json").read_text())["model"]["input"]
    return np.zeros((1, *spec["shape"][1:]), spec["dtype"])


def instructions_per_inference(target, bundle_dir: Path, runner: str = "run.py",
                               repeat: int = 20, model: Path | None = None,
                               sample: np.ndarray | None = None, cycles: bool = True) -> dict:
    """Instructions per inference for the TVM bundle (and LiteRT when ``model`` is given); with
    ``cycles``, also each program's estimate (``estimates``: cycles, ms, traffic)."""
    timing = timing_of(target) if cycles else None
    bundle_dir = Path(bundle_dir).absolute()
    result = {"unit": "guest instructions per inference (qemu TCG plugin, not cycles)",
              "repeat": repeat}
    with tempfile.TemporaryDirectory(prefix="sandglass-bench-") as tmp:
        tmp = Path(tmp)
        x = tmp / "sample.npy"
        np.save(x, zero_sample(bundle_dir) if sample is None else sample)
        programs = {"tvm": lambda k: [str(bundle_dir / runner), "--input", str(x),
                                      "--repeat", str(k)]}
        if model is not None:
            (tmp / "litert.py").write_text(LITERT_SCRIPT)
            for name, resolver in LITERT_RESOLVERS.items():
                programs[name] = (lambda r: lambda k: [str(tmp / "litert.py"),
                                                       str(Path(model).absolute()), str(k), r,
                                                       str(x)])(resolver)
        for name, argv in programs.items():
            once, twice = (parse(counted_run(target, argv(k), tmp, blocks=timing is not None))
                           for k in (repeat, 2 * repeat))
            result[name] = (twice.instructions - once.instructions) // repeat
            result[f"{name}_total_{2 * repeat}"] = twice.instructions
            if timing is not None:
                difference = Trace()
                difference.add(twice)
                difference.add(once, -1)
                result.setdefault("estimates", {})[name] = estimate(difference, timing, repeat)
    return result
