"""Train a model float, fine-tune it with quantization-aware training, export it fully int8.

    python keras_model/train.py --preset mobilenext-mcu --identity-multiplier 0.5 --out models/NAME
    python keras_model/train.py --arch mobilenext --width 0.35 --resolution 64 --channels 1 \
        [--epochs N --qat-epochs K --batch-size B --lr LR --data DIR --seed S --limit N] --out models/NAME

Writes NAME.keras (float Keras model), NAME_int8.tflite (int8 input/output, int8 builtin ops only) and
NAME.json (config, seed, dataset, epochs, float / QAT / int8 accuracy on the test split, sizes, train time,
versions, the command). Every file is written under a temp name and renamed when complete.

Recipe: Adam, one-cycle learning rate (linear warm-up over the first 10 % of steps, then cosine decay to 0),
label smoothing 0.1, random horizontal flips. QAT (``keras_model.qat``) continues from the float weights with
a 10x smaller cosine-decayed learning rate; ``--qat-epochs`` may be a fraction of an epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import keras_model  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from keras_model.data import DataError, load_dataset, num_classes
from keras_model.export import ModelError

WARMUP = 0.1          # share of the float steps spent warming the learning rate up
QAT_LR_FACTOR = 0.1   # QAT learning rate = float peak learning rate * this
LABEL_SMOOTHING = 0.1


class UsageError(ValueError):
    """Bad command-line input: the message is one line meant for the user."""


def _schedule(peak, steps, warmup):
    """Learning rate: linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0."""
    import tensorflow as tf
    import tf_keras as keras

    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = peak * (step + 1) / max(warmup, 1)
            progress = tf.clip_by_value((step - warmup) / max(steps - warmup, 1), 0.0, 1.0)
            return tf.where(step < warmup, warm, 0.5 * peak * (1 + tf.cos(math.pi * progress)))

        def get_config(self):
            return {"peak": peak, "steps": steps, "warmup": warmup}

    return OneCycle()


class _Progress:
    """A progress bar over the steps of a phase (n of N, elapsed, remaining), and one line per
    epoch: loss, train accuracy, learning rate, time."""

    def __init__(self, phase, total_epochs, total_steps):
        from tqdm import tqdm

        self.phase, self.total = phase, total_epochs
        self.bar = tqdm(total=total_steps, desc=phase, unit="step", dynamic_ncols=True)

    def step(self):
        self.bar.update(1)

    def __call__(self, epoch, logs, seconds, lr):
        self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.4f}")
        self.bar.write(f"[{self.phase}] epoch {epoch}/{self.total}: loss {logs['loss']:.4f} "
                       f"acc {logs['accuracy']:.4f} lr {lr:.2e} ({seconds:.0f} s)")

    def close(self):
        self.bar.close()


def _fit(model, x, y, epochs, batch_size, lr, warmup_share, phase, rng):
    """Fit for ``epochs`` (may be fractional: the last epoch then covers part of the shuffled data)."""
    import tf_keras as keras

    steps_per_epoch = math.ceil(len(x) / batch_size)
    total_steps = max(1, round(epochs * steps_per_epoch))
    schedule = _schedule(lr, total_steps, int(warmup_share * total_steps))
    optimizer = keras.optimizers.Adam(schedule)
    model.compile(optimizer, keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                  label_smoothing=LABEL_SMOOTHING),
                  metrics=["accuracy"])
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    progress = _Progress(phase, n_epochs, total_steps)
    on_step = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: progress.step())
    y1 = keras.utils.to_categorical(y, num_classes=model.output_shape[-1])
    done = 0
    for epoch in range(1, n_epochs + 1):
        flip = rng.random(len(x)) < 0.5  # flip a random half in place: flips are their own inverse
        x[flip] = x[flip, :, ::-1]
        order = rng.permutation(len(x))[:min(steps_per_epoch, total_steps - done) * batch_size]
        t0 = time.time()
        hist = model.fit(x[order], y1[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                         callbacks=[on_step])
        done += math.ceil(len(order) / batch_size)
        lr_now = float(schedule(optimizer.iterations))
        progress(epoch, {k: v[-1] for k, v in hist.history.items()}, time.time() - t0, lr_now)
    progress.close()


def _init_weights(model, path):
    """Copy every layer's weights from the float Keras model at path (matched by layer name and shape)."""
    import tf_keras as keras

    try:
        source = keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load --init-from model {path}: {str(e).splitlines()[0]}") from None
    by_name = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        src = by_name.get(layer.name)
        if src is None or [w.shape for w in src.weights] != [w.shape for w in layer.weights]:
            raise UsageError(f"--init-from model {path} does not match layer {layer.name} of {model.name}")
        layer.set_weights(src.get_weights())


def _lineage(init_from):
    """What --init-from started from: its path plus, when NAME.json sits next to NAME.keras, how that model
    was trained (its command, training record, accuracy and own lineage), read before anything is replaced."""
    if init_from is None:
        return None
    record = {"path": init_from}
    meta = Path(init_from).with_suffix(".json")
    if meta.is_file():
        prev = json.loads(meta.read_text())
        keys = ("command", "config", "training", "accuracy", "train_time_s", "init_from")
        record.update({k: prev.get(k) for k in keys})
    return record


def _keras_accuracy(model, x, y, batch_size):
    return float((model.predict(x, batch_size=batch_size, verbose=0).argmax(-1) == y).mean())


def _check_out(out: str) -> Path:
    out_path = Path(out)
    if out_path.name == "" or out_path.suffix in (".keras", ".tflite", ".json"):
        raise UsageError(f"--out takes a path without extension (models/NAME), got {out}")
    parent = out_path.parent
    if not parent.is_dir():
        raise UsageError(f"output directory {parent} does not exist")
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as e:
        raise UsageError(f"output directory {parent} is not writable: {e.strerror}") from None
    return out_path


def _versions():
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
            "tensorflow_model_optimization": tfmot.__version__, "numpy": np.__version__}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="model preset, e.g. mobilenext-mcu (sets the arch and its knobs)")
    p.add_argument("--arch", help="architecture (mobilenext, mobilenetv2) when no preset is given")
    p.add_argument("--width", type=float, help="width multiplier")
    p.add_argument("--resolution", type=int, help="input resolution (square)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="input channels")
    p.add_argument("--identity-multiplier", type=float, help="MobileNeXt identity tensor multiplier (0, 1]")
    p.add_argument("--epochs", type=float, default=5, help="float training epochs (default 5)")
    p.add_argument("--qat-epochs", type=float, default=1, help="QAT epochs, may be fractional (default 1)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--init-from", help="start from the weights of this float .keras model (same layers)")
    p.add_argument("--data", help="image folder (one sub-folder per class) instead of Fashion-MNIST")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, shuffling, --data split)")
    p.add_argument("--limit", type=int, help="use only the first N train and N test images")
    p.add_argument("--out", required=True, help="output path without extension: models/NAME")
    return p.parse_args(argv)


def resolve_config(args) -> dict:
    """The full model config from preset/arch and the knob flags (UsageError on bad input)."""
    if not args.preset and not args.arch:
        raise UsageError("give --preset or --arch")
    overrides = {k: v for k, v in (("width", args.width), ("resolution", args.resolution),
                                   ("channels", args.channels),
                                   ("identity_multiplier", args.identity_multiplier)) if v is not None}
    overrides["classes"] = num_classes(args.data)
    from keras_model.factory import model_config  # imports TensorFlow: after the cheap checks

    try:
        config = model_config(args.preset or args.arch, **overrides)
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    if args.preset and args.arch and config["arch"] != args.arch:
        raise UsageError(f"preset {args.preset} is a {config['arch']}, not a {args.arch}")
    return config


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        for name in ("epochs", "batch_size", "lr"):
            if getattr(args, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0")
        if args.qat_epochs < 0:
            raise UsageError("--qat-epochs must be >= 0")
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        out = _check_out(args.out)
        if args.init_from is not None and not Path(args.init_from).is_file():
            raise UsageError(f"--init-from model {args.init_from} does not exist")
        config = resolve_config(args)
        res, ch = config["resolution"], config["channels"]
        x_train, y_train = load_dataset("train", res, ch, args.data, args.limit, args.seed)
        x_test, y_test = load_dataset("test", res, ch, args.data, args.limit, args.seed)
    except (UsageError, DataError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return train(args, config, out, (x_train, y_train), (x_test, y_test))


def train(args, config, out: Path, train_data, test_data) -> int:
    import tf_keras as keras

    from keras_model import evaluate as ev, export, qat
    from keras_model.factory import create_model

    (x_train, y_train), (x_test, y_test) = train_data, test_data
    t_start = time.time()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    knobs = {k: v for k, v in config.items() if k != "arch"}
    model = create_model(config["arch"], **knobs)
    lineage = _lineage(args.init_from)
    if args.init_from is not None:
        try:
            _init_weights(model, args.init_from)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"{model.name}: {model.count_params()} parameters, {len(x_train)} train / {len(x_test)} test images "
          f"at {config['resolution']}x{config['resolution']}x{config['channels']}", flush=True)

    _fit(model, x_train, y_train, args.epochs, args.batch_size, args.lr, WARMUP, "float", rng)
    float_acc = _keras_accuracy(model, x_test, y_test, args.batch_size)
    print(f"float test accuracy {float_acc:.4f}", flush=True)
    t_float = time.time() - t_start

    qat_model = qat.quantize_model(model)
    if args.qat_epochs > 0:
        _fit(qat_model, x_train, y_train, args.qat_epochs, args.batch_size, args.lr * QAT_LR_FACTOR, 0.0,
             "qat", rng)
    qat_acc = _keras_accuracy(qat_model, x_test, y_test, args.batch_size)
    print(f"QAT test accuracy {qat_acc:.4f}", flush=True)
    t_qat = time.time() - t_start - t_float

    representative = x_train[rng.permutation(len(x_train))[:100]]
    tflite = export.convert_int8(qat_model, representative)
    problems = export.integer_only_problems(tflite)
    if problems:
        print(f"error: exported model is not integer-only: {problems[0]}", file=sys.stderr)
        return 1
    int8 = ev.evaluate(tflite, x_test, y_test)
    print(f"int8 TFLite test accuracy {int8['accuracy']:.4f} ({int8['correct']}/{int8['n']})", flush=True)
    train_time = time.time() - t_start

    paths = {"keras": out.with_name(out.name + ".keras"), "tflite": out.with_name(out.name + "_int8.tflite"),
             "json": out.with_name(out.name + ".json")}
    tmp_keras = out.with_name(f".{out.name}.tmp.keras")
    inference = keras.models.clone_model(model)  # uncompiled copy: the file holds no optimizer state
    inference.set_weights(model.get_weights())
    inference.save(tmp_keras)
    export.write_atomic(paths["tflite"], tflite)
    os.replace(tmp_keras, paths["keras"])
    record = {
        "name": out.name,
        "config": config,
        "parameters": int(model.count_params()),
        "seed": args.seed,
        "init_from": lineage,
        "dataset": {"name": args.data or "fashion-mnist", "train_images": int(len(x_train)),
                    "test_images": int(len(x_test)), "limit": args.limit},
        "training": {"epochs": args.epochs, "qat_epochs": args.qat_epochs, "batch_size": args.batch_size,
                     "peak_lr": args.lr, "qat_peak_lr": round(args.lr * QAT_LR_FACTOR, 12), "warmup": WARMUP,
                     "label_smoothing": LABEL_SMOOTHING, "augmentation": "random horizontal flip",
                     "optimizer": "adam, one-cycle (linear warm-up, cosine decay)"},
        "accuracy": {"float": float_acc, "qat": qat_acc, "int8_tflite": int8["accuracy"],
                     "int8_minus_float_points": round(100 * (int8["accuracy"] - float_acc), 2),
                     "split": "test", "int8_runtime": "LiteRT (default kernels)"},
        "files": {k: str(v) for k, v in paths.items()},
        "tflite_bytes": len(tflite),
        "int8_ops": sorted(set(export.op_names(tflite))),
        "train_time_s": {"float": round(t_float, 1), "qat": round(t_qat, 1), "total": round(train_time, 1)},
        "versions": _versions(),
        "command": "python keras_model/train.py " + " ".join(shlex.quote(a) for a in args.argv),
    }
    export.write_atomic(paths["json"], (json.dumps(record, indent=2) + "\n").encode())
    print(f"wrote {paths['keras']}, {paths['tflite']} ({len(tflite)} bytes), {paths['json']} "
          f"in {train_time:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
