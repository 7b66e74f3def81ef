"""Harness and report (harness/): analytical costs of real int8 graphs and a real report on the host.

The models are tiny 32x32 MobileNeXt-like nets made of the project's own sandglass blocks
(``keras_model.mobilenext.sandglass_block``, with the real ``IdentityMultiplierAdd`` shortcut) at identity
multipliers 1, 1/2 and 1/4, exported int8 with ``keras_model.export.convert_int8``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from compile.paths import REPO

MULTIPLIERS = (1.0, 0.5, 0.25)


def _tiny_mobilenext(multiplier: float):
    import tf_keras as keras

    from keras_model.layers import classifier_head, conv_bn
    from keras_model.mobilenext import sandglass_block

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1))
    x = conv_bn(inputs, 16, 3, 2, "stem", relu6=True)
    for i in (1, 2):   # same channels at stride 1: the "dw-pw-pw-dw+shortcut" variant
        x = sandglass_block(x, 16, 1, 4, False, multiplier, name=f"block{i}")
    return keras.Model(inputs, classifier_head(x, 10, 0.0))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> list[Path]:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from keras_model.data import load_dataset
    from keras_model.export import convert_int8

    out = tmp_path_factory.mktemp("harness_models")
    images, _ = load_dataset("train", 32, 1, limit=16)
    paths = []
    for m in MULTIPLIERS:
        name = f"tiny_m{round(m * 100):03d}"
        (out / f"{name}_int8.tflite").write_bytes(convert_int8(_tiny_mobilenext(m), images))
        (out / f"{name}.json").write_text(json.dumps({"arch": "mobilenext", "identity_multiplier": m}))
        paths.append(out / f"{name}_int8.tflite")
    return paths


def _report(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "harness/report.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)


def test_analysis_counts_the_partial_shortcut(tiny_models):
    from harness.analysis import analyze

    results = [analyze(p) for p in tiny_models]
    full, half, quarter = results
    # 16x16 feature map, 16 channels, 2 blocks with a shortcut: k = floor(16 m) channels added per block.
    for r, m in zip(results, MULTIPLIERS):
        k = int(16 * m)
        assert r["shortcut_adds"] == 2
        assert r["shortcut_elements"] == 2 * 16 * 16 * k
        assert r["shortcut_bytes"] == 3 * r["shortcut_elements"]           # 2 int8 inputs + 1 output
        # fused kernel: reads k channels of the input, all 16 of the block output, writes 16
        assert r["shortcut_bytes_fused"] == 2 * 16 * 16 * (k + 16 + 16)
    # same network apart from the shortcut: parameters and MACs do not change
    assert len({(r["params"], r["macs"]) for r in results}) == 1
    for key in ("shortcut_elements", "shortcut_bytes", "shortcut_bytes_fused", "bytes_moved_fused"):
        values = [r[key] for r in results]
        assert values == sorted(values, reverse=True) and len(set(values)) == 3, (key, values)
    # as LiteRT runs it (slice + add + concatenation op by op), only the partial multipliers compare
    assert half["bytes_moved"] > quarter["bytes_moved"]
    assert half["data_movement_bytes"] > 0 and full["data_movement_bytes"] == 0
    # per-layer rows add up to the totals
    assert sum(l["activation_bytes"] for l in full["layers"]) == full["bytes_moved"]
    assert sum(l["macs"] for l in full["layers"]) == full["macs"]
    assert full["peak_live_bytes"] >= 16 * 16 * 16 * 2      # a block's input and output are live together


def test_report_on_host_and_cortex_m4(tiny_models, tmp_path):
    out = tmp_path / "report"
    models = [tiny_models[0], tiny_models[2]]           # multipliers 1 and 1/4
    proc = _report("--targets", "host,cortex-m4", "--quick", "--models", ",".join(map(str, models)),
                   "--out", str(out), "--cache", str(tmp_path / "cache"))
    report = json.loads((out / "report.json").read_text())
    # exit 0, or 1 with every failure named in the report (a target that disagrees or fails)
    assert proc.returncode == (1 if report["failures"] else 0), proc.stderr[-2000:]
    # the terminal gets progress lines only (stderr is a pipe here: one line per finished item);
    # the commands and what native code prints go to the log
    phases = {"report:", "build", "reference", "run", "host", "failed:"}
    assert {line.split()[0] for line in proc.stderr.splitlines()} <= phases, proc.stderr[-2000:]
    assert "build       4/4" in proc.stderr and "run         4/4" in proc.stderr
    assert "python compile/run.py --target mps2-an386" in (out / "report.log").read_text()

    assert report["schema"] == "sandglass-report" and report["schema_version"] == 2
    for key in ("created", "command", "git", "versions", "machine", "settings", "targets", "models",
                "commands", "failures", "plots"):
        assert key in report, key
    assert report["versions"]["apache-tvm"] and report["git"]["commit"]
    assert list(report["targets"]) == ["host", "mps2-an386"]              # alias resolved
    assert "ms" in report["targets"]["host"]["measures"]
    assert "instructions" in report["targets"]["mps2-an386"]["measures"]
    assert [m["identity_multiplier"] for m in report["models"]] == [1.0, 0.25]
    for name, has_data in report["plots"].items():
        assert (out / name).stat().st_size > 1000
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# sandglass") and "| 1/4 | -" in markdown     # the savings row
    # report.md and plots can be redone from report.json alone, identically
    (out / "report.md").unlink()
    assert _report("--render-only", "--out", str(out)).returncode == proc.returncode
    assert (out / "report.md").read_text() == markdown

    # files inside the repository are named relative to it; these models and the cache are outside it
    assert f"{REPO}/" not in (out / "report.json").read_text()
    assert report["commands"][0].startswith("python compile/build.py --target ")
    assert report["models"][0]["path"] == str(models[0]) and report["settings"]["cache"] == str(tmp_path / "cache")

    for m in report["models"]:
        tflm = m["tflm"]
        assert m["analysis"]["layers"] and tflm["total_bytes"] == tflm["head_bytes"] + tflm["tail_bytes"]
        assert tflm["head_bytes"] >= m["analysis"]["peak_live_bytes"]
        agreement = m["agreement"]
        for name, rec in m["targets"].items():
            # agreement is decided on real outputs first; a speed exists only when every target agreed
            if rec["status"] in ("ok", "withheld"):
                assert name in agreement["targets"]
            if rec["status"] != "ok":
                assert not {"tvm_ms", "litert_ms", "tvm_instructions"} & set(rec)
                assert any(f["model"] == m["name"] for f in report["failures"])
                continue
            assert agreement["all_bit_exact"] and all(a["bit_exact"] for a in agreement["targets"].values())
            assert agreement["targets"][name]["mismatched_values"] == 0
            if name == "host":
                for key in ("tvm_ms", "litert_ms"):
                    stats = rec[key]
                    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
                    assert stats["runs"] == report["settings"]["repeats"] and stats["threads"] == 1
            else:
                assert rec["tvm_instructions"] > 0 and rec["flash_bytes"] > 0
                assert rec["arena_bytes"] >= rec["arena_lower_bound"] > 0
                # estimated cycles beside the instructions, and the bytes each region moved
                assert rec["cycles_estimate"] >= rec["tvm_instructions"]
                assert rec["ms_estimate"] == pytest.approx(rec["cycles_estimate"] / 25e3, rel=1e-3)
                assert rec["traffic"]["weights"]["load_bytes"] >= rec["flash_weights_bytes"]
    assert "## Memory traffic: measured against analytical" in markdown
    assert "mps2-an386 TVM ms (est.)" in markdown

    # --bundle: a bundle made before is used as it is for its model and target, not built again
    bundle = Path(report["models"][0]["targets"]["host"]["bundle"])
    out2 = tmp_path / "report2"
    proc = _report("--targets", "host", "--quick", "--models", str(models[0]), "--bundle", str(bundle),
                   "--out", str(out2), "--cache", str(tmp_path / "cache2"))
    report2 = json.loads((out2 / "report.json").read_text())
    assert proc.returncode == (1 if report2["failures"] else 0), proc.stderr[-2000:]
    rec = report2["models"][0]["targets"]["host"]
    assert rec["bundle"] == str(bundle) and rec["built_by"] == "given with --bundle"
    assert not any(c.startswith("python compile/build.py") for c in report2["commands"])
    assert "build " not in proc.stderr
    cortex = report["models"][0]["targets"]["mps2-an386"]["bundle"]
    proc = _report("--targets", "host", "--models", str(models[0]), "--bundle", cortex, "--out", str(out2))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not in --targets" in proc.stderr

    # --quick reuses a bundle only if built from the same model by the same compiler sources
    from harness.measure import STAMP, bundle_is_current
    sha = json.loads((bundle / "bundle.json").read_text())["model"]["sha256"]
    assert bundle_is_current(bundle, sha) and not bundle_is_current(bundle, "0" * 64)
    stamp = json.loads((bundle / STAMP).read_text())
    (bundle / STAMP).write_text(json.dumps({**stamp, "compiler": "an older compiler"}))
    assert not bundle_is_current(bundle, sha)


def test_report_names_repo_files_relative_to_the_repo(tmp_path):
    from harness.paths import in_repo, repo_relative
    from harness.report import command_line

    assert repo_relative(REPO / "models" / "x_int8.tflite") == "models/x_int8.tflite"
    assert repo_relative(tmp_path / "r") == str(tmp_path / "r")
    assert in_repo("models/x_int8.tflite") == REPO / "models" / "x_int8.tflite"
    assert in_repo(str(tmp_path)) == tmp_path
    argv = ["--quick", "--out", str(REPO / "reports" / "r"), f"--cache={REPO}/build/c",
            "--models", f"{REPO}/models/a_int8.tflite,mobilenetv2_mcu", "--targets", "host"]
    assert command_line(argv) == ("python harness/report.py --quick --out reports/r --cache=build/c "
                                  "--models models/a_int8.tflite,mobilenetv2_mcu --targets host")


def test_agreement_cell_reads_compile_measure_compare():
    from compile.measure import compare
    from harness.markdown import _agreement

    a = np.arange(-5, 5, dtype=np.int8).reshape(2, 5)
    assert _agreement(compare(a, a.copy()), 2) == "bit-exact (2 inputs)"
    b = a.copy()
    b[1, 2] += 1
    assert _agreement(compare(a, b), 2).startswith("DIFFERENT (1 values, 90.00 % equal, max diff 1 LSB")
    assert "DIFFERENT (got int16" in _agreement(compare(a, a.astype(np.int16)), 2)
    assert _agreement(None, 2) == "FAILED (no output)"


def test_unknown_target_exits_2(tmp_path):
    out = tmp_path / "never"
    proc = _report("--targets", "host,no-such-board", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: unknown target")
    assert not out.exists()


def test_unknown_model_exits_2(tmp_path):
    proc = _report("--targets", "host", "--models", "mobilenext_mcu_m999", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown model")


def test_unreadable_model_file_exits_2(tmp_path):
    bad = tmp_path / "bad_int8.tflite"
    bad.write_bytes(b"not a flatbuffer")
    out = tmp_path / "r"
    proc = _report("--targets", "host", "--models", str(bad), "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert not out.exists()


def test_render_only_refuses_another_schema_version(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"schema": "sandglass-report", "schema_version": 1}))
    proc = _report("--render-only", "--out", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "version 1" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_full_disk_while_writing_leaves_the_old_report(tmp_path, monkeypatch):
    """A report is written beside its directory and published whole, like a bundle: a full
    disk is one user error and the report that was there stays."""
    import errno

    from compile.errors import UserError
    from harness import markdown, report

    out = tmp_path / "r"
    out.mkdir()
    (out / "report.md").write_text("the old report\n")
    suite = {"suite": "mlperf-tiny", "schema": report.SCHEMA}

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(markdown, "render_suite", full)
    with pytest.raises(UserError, match="no space left on the device while writing the report"):
        report.write_report(suite, out)
    assert sorted(os.listdir(tmp_path)) == ["r"]
    assert (out / "report.md").read_text() == "the old report\n"
