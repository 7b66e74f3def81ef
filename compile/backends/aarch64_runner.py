"""Standalone runner of a sandglass Raspberry Pi bundle (copied into the bundle as ``run.py``).

Needs only python3 + the aarch64 ``apache-tvm`` / ``apache-tvm-ffi`` / ``numpy`` wheels (no
sandglass): on the Pi, and under ``qemu-aarch64`` in the userland of ``compile.sysroot``.

    python3 run.py --input x.npy --output y.npy    # N samples (N, *input shape) -> outputs
    python3 run.py --benchmark 50                  # median latency of main(), TVM_NUM_THREADS
    python3 run.py --repeat K                      # K extra calls of main() (instruction counts)

Prints one JSON line with what it did (samples, timings) on stdout.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description="run a sandglass aarch64 bundle")
    ap.add_argument("--input", help="int8 samples .npy, shape (N, *input shape[1:]); default: zeros")
    ap.add_argument("--output", help="where to save the outputs .npy")
    ap.add_argument("--benchmark", type=int, default=0, metavar="N",
                    help="time N repeats of main() (after one warm-up) and report the median")
    ap.add_argument("--repeat", type=int, default=0, metavar="K",
                    help="call main() K more times on the first sample (for instruction counts)")
    args = ap.parse_args(argv)

    with open(os.path.join(HERE, "bundle.json")) as f:
        manifest = json.load(f)
    spec = manifest["model"]["input"]
    shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    if args.input:
        samples = np.load(args.input)
        if samples.dtype != dtype or samples.shape[1:] != shape[1:]:
            sys.exit(f"error: {args.input} holds {samples.dtype}{list(samples.shape)}, "
                     f"expected {dtype}[N, {', '.join(map(str, shape[1:]))}]")
    else:
        samples = np.zeros((1, *shape[1:]), dtype)

    dev = tvm.cpu()
    lib = tvm.runtime.load_module(os.path.join(HERE, manifest["library"]))
    vm = VirtualMachine(lib, dev)
    report = {"samples": int(len(samples)), "threads": os.environ.get("TVM_NUM_THREADS", "all")}

    outputs = [vm["main"](tvm.runtime.tensor(np.ascontiguousarray(s.reshape(shape)))).numpy()[0]
               for s in samples]
    if args.output:
        np.save(args.output, np.stack(outputs))

    first = tvm.runtime.tensor(np.ascontiguousarray(samples[0].reshape(shape)))
    main = vm["main"]   # looked up once, like LiteRT's interpreter.invoke
    for _ in range(args.repeat):
        main(first)
    report["repeat"] = args.repeat

    if args.benchmark:
        vm.set_input("main", first)
        timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=args.benchmark)
        runs = np.array(timer("main").results) * 1e3
        report.update(benchmark_runs=args.benchmark, median_ms=float(np.median(runs)),
                      min_ms=float(runs.min()), max_ms=float(runs.max()))
    start = time.perf_counter()
    vm["main"](first)
    report["one_call_ms"] = (time.perf_counter() - start) * 1e3
    print(json.dumps(report))


if __name__ == "__main__":
    main()
