"""PNG plots of a report (matplotlib, Agg). Every axis names its unit and where it was measured.

* ``speed_vs_multiplier.png``   per target: ms (host) or instructions per inference (QEMU) vs multiplier
* ``memory_vs_multiplier.png``  analytical bytes moved / shortcut bytes, and arenas vs multiplier
* ``accuracy_vs_latency.png``   trained accuracy vs host latency, MobileNeXt and MobileNetV2
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _mnext(report: dict) -> list[dict]:
    """MobileNeXt models with a known multiplier, by multiplier."""
    ms = [m for m in report["models"] if m.get("identity_multiplier") is not None]
    return sorted(ms, key=lambda m: m["identity_multiplier"])


def _baselines(report: dict) -> list[dict]:
    return [m for m in report["models"] if m.get("identity_multiplier") is None]


def _ticks(ax, models: list[dict]) -> None:
    xs = [m["identity_multiplier"] for m in models]
    ax.set_xticks(xs)
    ax.set_xticklabels([str(Fraction(x).limit_denominator(8)) for x in xs])
    ax.set_xlabel("identity tensor multiplier")
    ax.grid(alpha=0.3)


def _series(models, get):
    pts = [(m["identity_multiplier"], get(m)) for m in models]
    return [x for x, y in pts if y is not None], [y for x, y in pts if y is not None]


def _ok(m: dict, target: str) -> dict:
    rec = m.get("targets", {}).get(target, {})
    return rec if rec.get("status") == "ok" else {}


def _line(ax, models, get, label, **kw) -> bool:
    xs, ys = _series(models, get)
    if xs:
        ax.plot(xs, ys, marker="o", label=label, **kw)
    return bool(xs)


def _hline(ax, baselines, get, label) -> None:
    for b in baselines:
        y = get(b)
        if y is not None:
            ax.axhline(y, ls="--", color="grey", label=f"{b['name']} ({label})")


def speed_plot(report: dict, path: Path) -> bool:
    models, base = _mnext(report), _baselines(report)
    targets = list(report["targets"])
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 3.8), squeeze=False)
    drawn = False
    for ax, name in zip(axes[0], targets):
        info = report["targets"][name]
        if info["kind"] == "host":
            for key, label in (("tvm_ms", "TVM"), ("litert_ms", "LiteRT (XNNPACK)")):
                get = lambda m, k=key: _ok(m, name).get(k, {}).get("median_ms")  # noqa: E731
                drawn |= _line(ax, models, get, f"{label}, median")
                _hline(ax, base, get, label)
            threads = report["settings"]["threads"]
            ax.set_ylabel(f"ms per inference ({threads} thread{'s' * (threads > 1)})")
            ax.set_title(f"{name}: {report['machine']['cpu'][:40]}", fontsize=9)
        elif any(_ok(m, name).get("ms_estimate") is not None for m in models):
            for key, label in (("ms_estimate", "TVM"), ("ms_estimate_max", "TVM, every flash access waits"),
                               ("litert_ms_estimate", "LiteRT (XNNPACK)")):
                get = lambda m, k=key: _ok(m, name).get(k)  # noqa: E731
                if key == "ms_estimate_max" and all(get(m) == _ok(m, name).get("ms_estimate") for m in models):
                    continue
                drawn |= _line(ax, models, get, label, **({"linestyle": "--"} if key.endswith("max") else {}))
                _hline(ax, base, get, label)
            clock = report["targets"][name].get("clock_hz") or 0
            ax.set_ylabel(f"ms per inference, estimated at {clock / 1e6:g} MHz")
            ax.set_title(f"{name}: estimated (QEMU + LLVM scheduling model)", fontsize=9)
        else:
            for key, label in (("tvm_instructions", "TVM"), ("litert_instructions", "LiteRT (XNNPACK)"),
                               ("litert_builtin_instructions", "LiteRT (built-in kernels)")):
                get = lambda m, k=key: _ok(m, name).get(k)  # noqa: E731
                drawn |= _line(ax, models, get, label)
                _hline(ax, base, get, label)
            ax.set_ylabel("instructions per inference (QEMU)")
            ax.set_title(f"{name}: instructions under QEMU, not cycles", fontsize=9)
        _ticks(ax, models)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no measurement\n(see failures)", ha="center", transform=ax.transAxes)
    fig.suptitle("MobileNeXt mcu: speed vs identity multiplier (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def memory_plot(report: dict, path: Path) -> bool:
    models, base = _mnext(report), _baselines(report)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    an = lambda k: (lambda m: m["analysis"][k])  # noqa: E731
    _line(a, models, an("bytes_moved"), "all ops, graph as is (LiteRT/TFLM)")
    _line(a, models, an("bytes_moved_fused"), "all ops, shortcut fused (TVM-style)")
    _line(a, models, an("shortcut_bytes_fused"), "shortcut kernels, fused")
    _line(a, models, an("shortcut_bytes"), "shortcut ADD ops only")
    a.set_ylabel("bytes read + written per inference (analytical)")
    a.set_title("Bytes moved (int8 activations, weights excluded)", fontsize=9)
    _line(b, models, an("peak_live_bytes"), "peak live activations (lower bound)")
    _line(b, models, lambda m: m.get("tflm", {}).get("head_bytes"), "TFLite Micro tensor arena (head)")
    for name, info in report["targets"].items():
        if info["kind"] == "cortex-m":
            _line(b, models, lambda m, n=name: _ok(m, n).get("arena_bytes"), f"TVM arena, {name}")
    _hline(b, base, an("peak_live_bytes"), "peak live")
    b.set_ylabel("bytes")
    b.set_title("Activation memory", fontsize=9)
    for ax in (a, b):
        _ticks(ax, models)
        ax.legend(fontsize=7)
    fig.suptitle("MobileNeXt mcu: memory vs identity multiplier")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return bool(models)


def accuracy_plot(report: dict, path: Path) -> bool:
    host = next((n for n, t in report["targets"].items() if t["kind"] == "host"), None)
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for m in report["models"]:
        ms = _ok(m, host).get("tvm_ms", {}).get("median_ms") if host else None
        if m.get("accuracy") is None or ms is None:
            continue
        is_next = m.get("identity_multiplier") is not None
        label = (f"MobileNeXt m={Fraction(m['identity_multiplier']).limit_denominator(8)}" if is_next
                 else m["name"])
        ax.scatter(ms, 100 * m["accuracy"], marker="o" if is_next else "s", s=40,
                   color="tab:blue" if is_next else "tab:red")
        ax.annotate(label, (ms, 100 * m["accuracy"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no trained model with a host latency:\naccuracy not available",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"TVM ms per inference on {host or 'host'} ({report['machine']['cpu'][:40]})")
    ax.set_ylabel("int8 test accuracy, Fashion-MNIST (%)")
    ax.set_title("Accuracy vs latency: MobileNeXt (o) and MobileNetV2 (s)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


PLOTS = {
    "speed_vs_multiplier.png": speed_plot,
    "memory_vs_multiplier.png": memory_plot,
    "accuracy_vs_latency.png": accuracy_plot,
}


def make_plots(report: dict, out_dir: Path) -> dict:
    """Write every plot into ``out_dir``; returns {file: True if it holds data}."""
    return {name: plot(report, Path(out_dir) / name) for name, plot in PLOTS.items()}
