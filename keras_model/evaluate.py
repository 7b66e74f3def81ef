"""Accuracy of an int8 TFLite model on the test split, run with LiteRT.

    python keras_model/evaluate.py --model models/mobilenext_mcu_m100_int8.tflite [--data DIR] [--json]
                                   [--limit N] [--reference]

The input resolution and channels come from the model; images are quantized with the model's input scale
and zero point exactly as TFLite's QUANTIZE kernel does (``keras_model.data.quantize_input``). LiteRT's default
(optimized) kernels are used unless ``--reference`` selects its reference kernels (bit-exact reference of the
project, slower). ``--json`` prints ``{"accuracy", "n", "correct", "model", "dataset", "kernels"}``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import keras_model  # noqa: F401  (environment for TensorFlow/Keras)
from keras_model.data import DataError, load_dataset, quantize_input
from keras_model.export import ModelError, read_tflite


def _interpreter(buf: bytes, reference: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    return Interpreter(model_content=buf, experimental_op_resolver_type=resolver)


def input_spec(buf: bytes) -> dict:
    """Input shape, dtype and quantization (scale, zero point) of a TFLite model."""
    d = _interpreter(buf, False).get_input_details()[0]
    return {"shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
            "scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}


def predict(buf: bytes, x: np.ndarray, reference: bool = False, batch: int = 100) -> np.ndarray:
    """Raw output (int8 scores) of a TFLite model for float images x in [0, 1], in batches."""
    interp = _interpreter(buf, reference)
    inp = interp.get_input_details()[0]
    scale, zero_point = inp["quantization"]
    xq = quantize_input(x, scale, zero_point) if inp["dtype"] == np.int8 else x.astype(inp["dtype"])
    outs = []
    current = None
    for start in range(0, len(xq), batch):
        chunk = xq[start:start + batch]
        if current != len(chunk):
            interp.resize_tensor_input(inp["index"], [len(chunk), *inp["shape"][1:]])
            interp.allocate_tensors()
            current = len(chunk)
        interp.set_tensor(inp["index"], chunk)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    return np.concatenate(outs)


def evaluate(buf: bytes, x: np.ndarray, y: np.ndarray, reference: bool = False) -> dict:
    """Top-1 accuracy of a TFLite model on (x, y)."""
    correct = int((predict(buf, x, reference).argmax(axis=-1) == y).sum())
    return {"accuracy": correct / len(y), "n": int(len(y)), "correct": correct}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="int8 .tflite file")
    p.add_argument("--data", help="image folder (one sub-folder per class) instead of Fashion-MNIST")
    p.add_argument("--seed", type=int, default=0, help="split seed of --data (default 0, as training)")
    p.add_argument("--limit", type=int, help="evaluate only the first N test images")
    p.add_argument("--reference", action="store_true", help="LiteRT reference kernels (bit-exact, slow)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    try:
        if args.limit is not None and args.limit < 1:
            raise DataError(f"--limit must be >= 1, got {args.limit}")
        buf = read_tflite(args.model)
        try:
            spec = input_spec(buf)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"LiteRT cannot load {args.model}: {str(e).splitlines()[0]}") from None
        _, res, _, channels = spec["shape"]
        x, y = load_dataset("test", res, channels, data_dir=args.data, limit=args.limit, seed=args.seed)
    except (DataError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {**evaluate(buf, x, y, args.reference), "model": args.model,
              "dataset": args.data or "fashion-mnist", "kernels": "reference" if args.reference else "default"}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}) on {result['dataset']} test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
