"""Standalone runner of a sandglass Raspberry Pi bundle (copied into the bundle as ``run.py``).

Needs only python3 + the aarch64 ``apache-tvm`` / ``apache-tvm-ffi`` / ``numpy`` wheels (no
sandglass): on the Pi, and under ``qemu-aarch64`` in the userland of ``compile.backends.aarch64.sysroot``.

    python3 run.py --input x.npy --output y.npy    # N samples (N, *input shape) -> outputs
    python3 run.py --benchmark 50                  # median latency of one inference, TVM_NUM_THREADS
    python3 run.py --repeat K                      # K extra inferences (instruction counts)
    python3 run.py --batch jobs.json               # several bundles in one process: a JSON list
                                                   # of [bundle dir, input .npy, output .npy]

Prints one JSON line with what it did (samples, timings; per job errors) on stdout.
"""
import argparse
import json
import os
import sys
import time

# Only the runtime library is needed to run (the compiler library is 240 MB).
os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm.runtime.vm import VirtualMachine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load_main(lib, manifest):
    """x -> y for one sample: the library's static entry point ``sandglass_main(x, y)`` (the
    kernels called in order on static storage) when the bundle has one, else the Relax VM."""
    entry = manifest.get("entry")
    if not entry:
        return VirtualMachine(lib, tvm.cpu())["main"]
    run = lib.get_function(entry, True)
    spec = manifest["model"]["output"]
    y = tvm.runtime.empty(tuple(spec["shape"]), spec["dtype"])

    def call(x):
        run(x, y)
        return y
    return call


def load_bundle(bundle_dir):
    """(manifest, x -> y for one sample) of the bundle in ``bundle_dir``."""
    with open(os.path.join(bundle_dir, "bundle.json")) as f:
        manifest = json.load(f)
    lib = tvm.runtime.load_module(os.path.join(bundle_dir, manifest["library"]))
    return manifest, load_main(lib, manifest)


def infer(main, shape, samples):
    """The outputs of ``main`` for every sample, stacked."""
    return np.stack([main(tvm.runtime.tensor(np.ascontiguousarray(s.reshape(shape)))).numpy()[0]
                     for s in samples])


def run_batch(jobs_file):
    """Each job's bundle on its inputs (the emulator and runtime start once for all); a job
    that fails is reported with its error and the others go on."""
    with open(jobs_file) as f:
        jobs = json.load(f)
    errors = {}
    for i, (bundle_dir, inputs, outputs) in enumerate(jobs):
        try:
            manifest, main = load_bundle(bundle_dir)
            np.save(outputs, infer(main, tuple(manifest["model"]["input"]["shape"]),
                                   np.load(inputs)))
        except Exception as err:  # noqa: BLE001  (reported per job, not fatal to the batch)
            errors[i] = f"{type(err).__name__}: {err}"
    print(json.dumps({"jobs": len(jobs), "errors": errors}))


def main(argv=None):
    ap = argparse.ArgumentParser(description="run a sandglass aarch64 bundle")
    ap.add_argument("--input", help="int8 samples .npy, shape (N, *input shape[1:]); default: zeros")
    ap.add_argument("--output", help="where to save the outputs .npy")
    ap.add_argument("--benchmark", type=int, default=0, metavar="N",
                    help="time N inferences (after one warm-up) and report the median")
    ap.add_argument("--repeat", type=int, default=0, metavar="K",
                    help="run K more inferences of the first sample (for instruction counts)")
    ap.add_argument("--batch", metavar="JOBS.json",
                    help="run several bundles: a JSON list of [bundle dir, input, output]")
    args = ap.parse_args(argv)
    if args.batch:
        return run_batch(args.batch)

    manifest, main = load_bundle(HERE)    # looked up once, like LiteRT's interpreter.invoke
    spec = manifest["model"]["input"]
    shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    if args.input:
        samples = np.load(args.input)
        if samples.dtype != dtype or samples.shape[1:] != shape[1:]:
            sys.exit(f"error: {args.input} holds {samples.dtype}{list(samples.shape)}, "
                     f"expected {dtype}[N, {', '.join(map(str, shape[1:]))}]")
    else:
        samples = np.zeros((1, *shape[1:]), dtype)

    report = {"samples": int(len(samples)), "threads": os.environ.get("TVM_NUM_THREADS", "all"),
              "entry": manifest.get("entry") or "relax vm main"}

    outputs = infer(main, shape, samples)
    if args.output:
        np.save(args.output, outputs)

    first = tvm.runtime.tensor(np.ascontiguousarray(samples[0].reshape(shape)))
    for _ in range(args.repeat):
        main(first)
    report["repeat"] = args.repeat

    if args.benchmark:
        main(first)   # warm-up
        runs = []
        for _ in range(args.benchmark):
            start = time.perf_counter()
            main(first)
            runs.append((time.perf_counter() - start) * 1e3)
        report.update(benchmark_runs=args.benchmark, median_ms=float(np.median(runs)),
                      min_ms=float(np.min(runs)), max_ms=float(np.max(runs)))
    start = time.perf_counter()
    main(first)
    report["one_call_ms"] = (time.perf_counter() - start) * 1e3
    print(json.dumps(report))


if __name__ == "__main__":
    main()
