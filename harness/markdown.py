"""``report.md`` from a report dict (``harness.report``): tables only, every number with its unit and where
it was measured; the JSON next to it has everything."""
from __future__ import annotations

from fractions import Fraction

from harness.analysis import layer_table


def _mult(m: dict) -> str:
    x = m.get("identity_multiplier")
    return "–" if x is None else str(Fraction(x).limit_denominator(8))


def _n(x, fmt="{:,}") -> str:
    return "–" if x is None else fmt.format(x)


def _tflm(m: dict) -> str:
    t = m.get("tflm", {})
    return f"{_n(t.get('head_bytes'))} / {_n(t.get('total_bytes'))}"


def _status(rec: dict) -> str:
    return {"ok": "ok", "withheld": "withheld", "failed": "FAILED"}.get(rec.get("status"), rec.get("status", "–"))


def _models_table(report: dict) -> list[str]:
    rows = ["| model | multiplier | trained | accuracy | params | MACs | shortcut adds | shortcut B (ADD ops) "
            "| shortcut B (fused) | bytes moved (as is) | bytes moved (fused) | peak live B | TFLM arena B head / total |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in report["models"]:
        a = m["analysis"]
        acc = "–" if m.get("accuracy") is None else f"{100 * m['accuracy']:.2f} %"
        rows.append(f"| {m['name']} | {_mult(m)} | {'yes' if m['trained'] else 'no'} | {acc} | {a['params']:,} "
                    f"| {a['macs']:,} | {a['shortcut_adds']} | {a['shortcut_bytes']:,} "
                    f"| {a['shortcut_bytes_fused']:,} | {a['bytes_moved']:,} | {a['bytes_moved_fused']:,} "
                    f"| {a['peak_live_bytes']:,} | {_tflm(m)} |")
    return rows


def _pct(value, base) -> str:
    if value is None or not base:
        return "–"
    return f"{100 * (value - base) / base:+.1f} %"


def _savings_table(report: dict) -> list[str]:
    """Each MobileNeXt multiplier < 1 against the multiplier-1 model of the same report (negative = saves)."""
    mnext = sorted((m for m in report["models"] if m.get("identity_multiplier") is not None),
                   key=lambda m: -m["identity_multiplier"])
    base = next((m for m in mnext if m["identity_multiplier"] == 1.0), None)
    if base is None or len(mnext) < 2:
        return ["(needs the multiplier-1 model and at least one other MobileNeXt model)"]
    columns = [("shortcut B (fused)", lambda m: m["analysis"]["shortcut_bytes_fused"]),
               ("bytes moved (as is)", lambda m: m["analysis"]["bytes_moved"]),
               ("bytes moved (fused)", lambda m: m["analysis"]["bytes_moved_fused"]),
               ("peak live", lambda m: m["analysis"]["peak_live_bytes"]),
               ("TFLM head", lambda m: m.get("tflm", {}).get("head_bytes"))]
    for name, info in report["targets"].items():
        ok = lambda m, n=name: m["targets"].get(n, {}) if m["targets"].get(n, {}).get("status") == "ok" else {}
        if info["kind"] == "host":
            columns.append((f"{name} TVM ms (median)", lambda m, ok=ok: ok(m).get("tvm_ms", {}).get("median_ms")))
            columns.append((f"{name} LiteRT ms (median)",
                            lambda m, ok=ok: ok(m).get("litert_ms", {}).get("median_ms")))
        else:
            columns.append((f"{name} TVM instructions", lambda m, ok=ok: ok(m).get("tvm_instructions")))
        if info["kind"] == "linux-aarch64":
            columns.append((f"{name} LiteRT XNNPACK instr.", lambda m, ok=ok: ok(m).get("litert_instructions")))
            columns.append((f"{name} LiteRT built-in instr.",
                            lambda m, ok=ok: ok(m).get("litert_builtin_instructions")))
        if info["kind"] == "cortex-m":
            columns.append((f"{name} TVM arena", lambda m, ok=ok: ok(m).get("arena_bytes")))
    rows = ["| multiplier | " + " | ".join(c for c, _ in columns) + " |", "|---:|" + "---:|" * len(columns)]
    for m in mnext:
        if m is not base:
            rows.append(f"| {_mult(m)} | " + " | ".join(_pct(get(m), get(base)) for _, get in columns) + " |")
    return rows


def _agreement_table(report: dict) -> list[str]:
    targets = list(report["targets"])
    rows = ["| model | " + " | ".join(targets) + " | all targets that ran bit-exact |", "|---|" + "---|" * (len(targets) + 1)]
    for m in report["models"]:
        cells = [_agreement(m["agreement"]["targets"].get(t), m["agreement"]["samples"]) for t in targets]
        rows.append(f"| {m['name']} | " + " | ".join(cells)
                    + f" | {'yes' if m['agreement']['all_bit_exact'] else 'NO'} |")
    return rows


def _agreement(a: dict | None, samples: int) -> str:
    """One cell: ``compile.measure.compare``'s verdict on a target's outputs."""
    if a is None:
        return "FAILED (no output)"
    if a["bit_exact"]:
        return f"bit-exact ({samples} inputs)"
    if "reason" in a:
        return f"DIFFERENT ({a['reason']})"
    unit, diff = ("LSB", a["max_abs_diff_lsb"]) if "max_abs_diff_lsb" in a else ("", a["max_abs_diff_value"])
    return (f"DIFFERENT ({a['mismatched_values']} values, {a['equal_values_pct']:.2f} % equal, max diff "
            f"{diff:g}{' ' + unit if unit else ''}, top-1 agrees {a['top1_agreement_pct']:.0f} %)")


def _ms(d: dict | None) -> str:
    if not d:
        return "–"
    return f"{d['median_ms']:.3f} ({d['min_ms']:.3f}–{d['max_ms']:.3f})"


def _target_section(report: dict, name: str) -> list[str]:
    info = report["targets"][name]
    lines = [f"### {name} — {info['description']}", "", f"Numbers: {info['measures']}.", ""]
    if info["kind"] == "host":
        s = report["settings"]
        lines += [f"ms per inference, median (min–max) of {s['repeats']} runs after one warm-up, "
                  f"{s['threads']} thread(s); LiteRT uses its default resolver (XNNPACK).", "",
                  "| model | multiplier | TVM ms | LiteRT ms | status |", "|---|---:|---:|---:|---|"]
        for m in report["models"]:
            r = m["targets"].get(name, {})
            lines.append(f"| {m['name']} | {_mult(m)} | {_ms(r.get('tvm_ms'))} | {_ms(r.get('litert_ms'))} "
                         f"| {_status(r)} {r.get('error', '')} |")
    elif info["kind"] == "linux-aarch64":
        lines += ["Instructions per inference of one thread, counted by a QEMU TCG plugin as the difference of "
                  "runs with K and 2K inferences (`compile/bench.py`); LiteRT: its aarch64 wheel with XNNPACK "
                  "(default) and with its built-in kernels only.", "",
                  "| model | multiplier | TVM instructions | LiteRT XNNPACK | LiteRT built-in | status |",
                  "|---|---:|---:|---:|---:|---|"]
        for m in report["models"]:
            r = m["targets"].get(name, {})
            lines.append(f"| {m['name']} | {_mult(m)} | {_n(r.get('tvm_instructions'))} "
                         f"| {_n(r.get('litert_instructions'))} | {_n(r.get('litert_builtin_instructions'))} "
                         f"| {_status(r)} {r.get('error', '')} |")
    else:
        lines += ["TVM arena: the firmware's one static activation arena; in brackets its planner's lower bound "
                  "(with the in-place writes and overlaps the plan uses) / the largest sum of live tensors at any "
                  "step. Flash: code + weights + other. TFLite Micro: tensor arena head (non-persistent) / total "
                  "on the 64-bit host (the tail of persistent structs is smaller with 32-bit pointers).", "",
                  "| model | multiplier | TVM instructions | instr. / MAC | TVM arena B (bound / live) | flash B "
                  "| TFLM arena B head / total | status |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for m in report["models"]:
            r = m["targets"].get(name, {})
            per_mac = r.get("instructions_per_mac")
            lines.append(f"| {m['name']} | {_mult(m)} | {_n(r.get('tvm_instructions'))} "
                         f"| {'–' if per_mac is None else f'{per_mac:.2f}'} "
                         f"| {_n(r.get('arena_bytes'))} ({_n(r.get('arena_lower_bound'))} / "
                         f"{_n(r.get('arena_live_bound'))}) "
                         f"| {_n(r.get('flash_bytes'))} | {_tflm(m)} | {_status(r)} {r.get('error', '')} |")
    return lines + [""]


def render(report: dict) -> str:
    v = report["versions"]
    lines = [
        "# sandglass: what MobileNeXt's identity tensor multiplier saves, measured",
        "",
        "MobileNeXt ([arXiv 2007.02269](https://arxiv.org/abs/2007.02269)) adds only a fraction (the identity "
        "tensor multiplier) of the channels through the shortcut. The paper reports FLOPs and accuracy only; "
        "this report measures int8 models compiled with Apache TVM on each target, after checking that every "
        "target's outputs are bit-exact with LiteRT's reference kernels.",
        "",
        f"- created {report['created']}, git `{report['git']['commit']}`"
        f"{' (uncommitted changes)' if report['git']['dirty'] else ''}",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores ({report['machine']['system']})",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- rerun: `{report['command']}`",
        "",
        *([] if report.get("complete") else ["**Partial report: the run is still going (or stopped).**", ""]),
        "## Models and analytical costs",
        "",
        "Computed from the int8 `.tflite` graph (`harness/analysis.py`). Activation bytes only (int8 = 1 B), "
        "weights and int32 biases excluded. *as is*: op by op as LiteRT / TFLite Micro run the graph "
        "(the partial shortcut is STRIDED_SLICE + ADD + CONCATENATION there); *fused*: slices, ADD and "
        "concatenation of a shortcut as one kernel reading only the added part, as a fusing compiler can. "
        "Peak live = lower bound of any arena in this op order.",
        "",
        *_models_table(report),
        "",
        "## What the multiplier saves (change against multiplier 1; negative = less)",
        "",
        "Host milliseconds on a shared machine are noisy: compare instructions and bytes first.",
        "",
        *_savings_table(report),
        "",
        "## Bit-exact agreement (checked before any speed is reported)",
        "",
        f"Reference: {report['models'][0]['agreement']['reference'] if report['models'] else '–'}; inputs: "
        + ("; ".join(sorted({m['inputs']['source'] for m in report['models']})) or "–") + ".",
        "",
        *_agreement_table(report),
        "",
        "## Measured per target",
        "",
    ]
    for name in report["targets"]:
        lines += _target_section(report, name)
    lines += ["## Plots", ""]
    for name, has_data in report.get("plots", {}).items():
        lines += [f"![{name}]({name})" + ("" if has_data else " (no data yet)"), ""]
    default = next((m for m in report["models"] if m["name"] == report["default_model"]),
                   report["models"][0] if report["models"] else None)
    if default:
        lines += [f"## Per-layer table: {default['name']}", "",
                  "Activation B = activation inputs read + outputs written by the op; shortcut B: shortcut ADDs.",
                  "", layer_table(default["analysis"]), ""]
    if report["failures"]:
        lines += ["## Failures", ""]
        lines += [f"- {f['model']} on {f['target']}: {f['error']}" for f in report["failures"]]
        lines.append("")
    lines += ["## Commands run", "", "```sh", *report["commands"], "```", ""]
    return "\n".join(lines)
