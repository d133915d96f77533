"""Tests of the attention comparison: its three configs, the SpeedMonitor
callback (training/callbacks.py), benchmarks/compare.py and scripts/compare_attention.py.

References: the YAML files themselves (the two Transformer configs differ only
in ``model.config.attention``), token counts summed by hand, means and sample
standard deviations computed here from synthetic per-run metrics, and
``load_translator`` on the checkpoints a tiny real comparison writes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from data.datamodule import TranslationDataModule
from model.rnn import RNNEncoderDecoder
from model.transformer import Transformer
from training.callbacks import SpeedMonitor
from training.cli import CHECKPOINT_SECTIONS, resolve_config
from inference.checkpoint import load_translator
from training.module import TranslationModule
from evaluation.metrics import tokenized_bleu
from conftest import load_script, read_raw

REPO = Path(__file__).resolve().parents[2]
NAMES = ("transformer_dot", "transformer_additive", "rnn")
CONFIGS = {name: REPO / "configs" / f"compare_{name}.yaml" for name in NAMES}


@pytest.fixture(scope="module")
def compare():
    """The comparison machinery (``benchmarks/compare.py``) and the script's ``main``."""
    import benchmarks.compare as machinery

    script = load_script("compare_attention")
    return types.SimpleNamespace(**{n: getattr(machinery, n) for n in machinery.__all__},
                                 main=script.main)


# ------------------------------------------------------------------ configs
def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts/lists -> ``{"trainer.callbacks.0.init_args.dirpath": ...}``."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, sub in items:
        flat.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def settings(name: str) -> dict[str, object]:
    """A config's keys, with its own name in output paths replaced by ``<name>``."""
    flat = flatten(yaml.safe_load(CONFIGS[name].read_text()))
    return {k: v.replace(f"compare_{name}", "<name>") if isinstance(v, str) else v
            for k, v in flat.items()}


def test_transformer_configs_differ_only_in_attention():
    dot, additive = settings("transformer_dot"), settings("transformer_additive")
    assert dot.keys() == additive.keys()
    differ = {k: (dot[k], additive[k]) for k in dot if dot[k] != additive[k]}
    assert differ == {"model.config.attention": ("dot", "additive")}
    # Output folders are the only other difference (replaced by <name> above).
    assert dot["trainer.default_root_dir"] == "runs/<name>"


def test_rnn_config_shares_data_budget_and_optimizer():
    """Everything but the network (model.rnn there, model.config here) is the
    Transformers': trainer, callbacks, optimizer, decoding and data."""
    dot, rnn = settings("transformer_dot"), settings("rnn")

    def outside(flat):
        return {k: v for k, v in flat.items() if not k.startswith(("model.config.", "model.rnn."))}

    assert outside(rnn) == outside(dot)
    assert any(k.startswith("model.rnn.") for k in rnn)
    assert not any(k.startswith("model.rnn.") for k in dot)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_compare_config_parses(name, tmp_path, monkeypatch):
    """Each config builds its network through TranslationCLI(run=False)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    train = load_script("train")
    cli = train.TranslationCLI(TranslationModule, TranslationDataModule,
                               args=["--config", str(CONFIGS[name])], run=False)
    raw = yaml.safe_load(CONFIGS[name].read_text())
    resolved = resolve_config("--config", str(CONFIGS[name]))
    expected, block = (RNNEncoderDecoder, "rnn") if name == "rnn" else (Transformer, "config")
    assert type(cli.model.model) is expected
    assert {k: getattr(cli.model.config, k) for k in raw["model"][block]} == raw["model"][block]
    assert cli.model.config.vocab_size == resolved["data"]["vocab_size"]
    assert any(isinstance(c, SpeedMonitor) for c in cli.trainer.callbacks)
    assert cli.trainer.max_steps == raw["trainer"]["max_steps"]


# ------------------------------------------------------------ SpeedMonitor
class _DictBatches(L.LightningModule):
    """A linear layer trained on dict batches that carry ``tgt_valid_len``."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch["x"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_bleu", 1.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_speed_monitor_logs_tokens_time_and_memory(tmp_path):
    lengths = torch.arange(1, 17)  # 16 sequences, 4 per batch
    data = [{"x": torch.randn(2), "tgt_valid_len": n} for n in lengths]
    loader = DataLoader(data, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, callbacks=[SpeedMonitor()],
                        logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=1, log_every_n_steps=1,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(_DictBatches(), loader, loader)
    with open(next(tmp_path.glob("lightning_logs/version_0/metrics.csv")), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train_tokens")]
    assert len(rows) == 2  # one per validation, none for the sanity check
    assert [float(r["train_tokens"]) for r in rows] == [lengths.sum().item(),
                                                         2 * lengths.sum().item()]
    last = {k: float(v) for k, v in rows[-1].items() if v}
    assert 0 < last["train_time"] <= last["wall_time"]
    assert last["train_tokens_per_sec"] == pytest.approx(last["train_tokens"] / last["train_time"],
                                                         rel=1e-4)
    assert last["peak_memory_mb"] > 10  # the process's peak RSS


# ------------------------------------------------------------ the script
def test_run_override_moves_outputs_and_sets_budget(compare, tmp_path, monkeypatch):
    raw = resolve_config("--config", str(CONFIGS["rnn"]), derive_paths=False)
    raw["trainer"]["callbacks"] = [c for c in raw["trainer"]["callbacks"]
                                   if not c["class_path"].endswith("SpeedMonitor")]
    run_dir = tmp_path / "rnn_seed3"
    override = compare.run_override(raw, run_dir, seed=3, max_steps=300, max_minutes=7.5,
                                    num_evals=3)
    trainer = override["trainer"]
    assert override["seed_everything"] == 3 and override["data"]["seed"] == 3
    assert (trainer["max_steps"], trainer["val_check_interval"]) == (300, 100)
    assert trainer["check_val_every_n_epoch"] is None and trainer["max_time"] == "00:00:07:30"
    assert trainer["logger"]["init_args"]["save_dir"] == str(run_dir)
    assert trainer["callbacks"][-1]["class_path"] == "training.callbacks.SpeedMonitor"
    assert "max_time" not in compare.run_override(raw, run_dir, 1)["trainer"]  # config's budget
    # What the run trains with: every checkpoint folder under run_dir, SpeedMonitor added.
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    monkeypatch.chdir(REPO)
    run = resolve_config("--config", str(CONFIGS["rnn"]), "--config",
                         str(tmp_path / "override.yaml"))
    dirpaths = [c["init_args"]["dirpath"] for c in run["trainer"]["callbacks"]
                if "dirpath" in c.get("init_args", {})]
    dirpaths += [run[name]["dirpath"] for name in CHECKPOINT_SECTIONS]
    assert len(dirpaths) == 4  # best.ckpt, last.ckpt, last.ckpt every N steps, averaging
    assert set(dirpaths) == {str(run_dir / "checkpoints"), str(run_dir / "checkpoints/averaging")}
    assert run["trainer"]["logger"]["init_args"]["save_dir"] == str(run_dir)


def synthetic_results(compare) -> list:
    results = []
    for model, base in (("transformer_dot", 20.0), ("rnn", 10.0)):
        for seed, delta in ((1, -1.0), (2, 1.0)):
            results.append(compare.RunResult(
                model, seed, parameters=1000.0, train_tokens_per_sec=5000 + 100 * delta,
                peak_memory_mb=800.0, wall_time=60 + delta, process_seconds=75.0, steps=300,
                best_step=300, val_bleu=base + delta, val_chrf=2 * base + delta,
                val_bleu_lc_norm_tok=base + 0.5 + delta,
                test_bleu=base + delta / 2, test_chrf=2 * base,
                test_bleu_lc_norm_tok=base + 1 + delta,
                train_loss=[(s, 8 - s / 100 + delta / 10) for s in range(0, 301, 25)],
                validations=[(100, 20 + delta, base / 3), (200, 40 + delta, 2 * base / 3),
                             (300, 60 + delta, base + delta)]))
    results.append(compare.RunResult("transformer_additive", 1,
                                     status="failed (exit code 1, see train.log)"))
    return results


def test_write_report_from_synthetic_runs(compare, tmp_path):
    results = synthetic_results(compare)
    paths = compare.write_report(results, tmp_path, "python scripts/compare_attention.py --x",
                                 "test machine", "300 updates")
    for name in ("val_bleu_steps", "val_bleu_time", "train_loss"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 + 2 * 3  # 5 runs, then mean and std per model
    by_key = {(r["model"], r["seed"]): r for r in rows}
    assert float(by_key["transformer_dot", "1"]["val_bleu"]) == 19.0
    assert float(by_key["transformer_dot", "mean"]["val_bleu"]) == pytest.approx(20.0)
    assert float(by_key["transformer_dot", "std"]["val_bleu"]) == pytest.approx(math.sqrt(2))
    assert float(by_key["rnn", "mean"]["train_tokens_per_sec"]) == pytest.approx(5000)
    assert by_key["transformer_additive", "mean"]["val_bleu"] == ""  # no successful run
    assert by_key["transformer_additive", "1"]["status"].startswith("failed")

    report = paths["report"].read_text()
    assert "`python scripts/compare_attention.py --x`" in report and "test machine" in report
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | runs | parameters | train tokens/s | peak memory")
    assert table[1] == ("| transformer_dot | 2 | 1,000 | 5,000 ± 141 | 800 ± 0 | 60 ± 1 | "
                        "20.00 ± 1.41 | 40.00 ± 1.41 | 20.50 ± 1.41 | 20.00 ± 0.71 | 40.00 ± 0.00 | "
                        "21.00 ± 1.41 |")
    assert table[2].startswith("| rnn | 2 | 1,000 | ")
    assert table[3] == "| transformer_additive | 0 | " + " | ".join(["–"] * 10) + " |"
    assert "transformer_additive seed 1: failed" in report
    for name in ("val_bleu_steps.png", "val_bleu_time.png", "train_loss.png"):
        assert f"({name})" in report
    # convergence: validation 300 (the last) against 200 (the last at or before 90% of 300)
    assert "## Convergence (validation BLEU at the end of training)" in report
    assert "| transformer_dot | 2 | 200 | 13.33 ± 0.00 | 300 | 20.00 ± 1.41 | +6.67 ± 1.41 | " \
        "still rising |" in report
    assert "| rnn | 2 | 200 | 6.67 ± 0.00 | 300 | 10.00 ± 1.41 | +3.33 ± 1.41 | still rising |" \
        in report


def test_convergence_reads_the_last_tenth_of_updates(compare):
    """Validation BLEU at the end against the last validation at or before 90% of
    the updates; the verdict follows the mean change (±0.5 BLEU: levelled off)."""
    def run(seed, curve, model="m"):
        return compare.RunResult(model, seed, validations=[(400 * (i + 1), 10.0 * i, bleu)
                                                           for i, bleu in enumerate(curve)])

    flat = [10, 20, 30, 34, 35, 35.5, 35.8, 36.0, 36.1, 36.3]  # 10 validations, 400 each
    table = compare.convergence([run(1, flat), run(2, [b + 0.4 for b in flat[:-1]] + [36.3]),
                                 compare.RunResult("m", 3, status="failed")])
    stats = table["m"]
    assert stats["from"][0] == 3600 and stats["to"][0] == 4000 and stats["change"][2] == 2
    assert stats["change"][0] == pytest.approx(((36.3 - 36.1) + (36.3 - 36.5)) / 2)
    assert stats["verdict"] == "levelled off"
    rising = compare.convergence([run(1, flat[:-1] + [36.9])])["m"]
    assert rising["change"][0] == pytest.approx(0.8) and rising["verdict"] == "still rising"
    assert compare.convergence([run(1, flat[:-1] + [35.0])])["m"]["verdict"] == "falling"
    # 1470 updates with 7 validations every 210: 1260 is the last at or before 90%
    short = compare.RunResult("m", 1, validations=[(210 * (i + 1), 0.0, float(i))
                                                   for i in range(7)])
    assert compare.convergence([short])["m"]["from"][0] == 1260
    assert compare.convergence([compare.RunResult("m", 1, validations=[(100, 1.0, 5.0)])]) == {}


def test_significance_is_sacrebleus_paired_bootstrap(compare, tmp_path):
    """Two models, two seeds, test outputs on disk: per seed and across seeds,
    the p-values are what sacreBLEU's ``PairedTest`` (paired bootstrap, 1000
    resamples) gives on the same files; the report and significance.csv have them."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    refs = [f"ein mann {w} auf der strasse ." for w in
            ("läuft", "steht", "sitzt", "liegt", "tanzt", "singt", "wartet", "spielt")] * 10
    noisy = {"transformer_dot": 0.2, "rnn": 0.6}  # share of words replaced
    generator = torch.Generator().manual_seed(0)
    results = []
    for model, rate in noisy.items():
        for seed in (1, 2):
            hyps = [" ".join(w if torch.rand(1, generator=generator).item() > rate else "x"
                             for w in ref.split()) for ref in refs]
            folder = tmp_path / f"{model}_seed{seed}"
            folder.mkdir()
            (folder / "t.hyp").write_text("\n".join(hyps) + "\n")
            (folder / "t.ref").write_text("\n".join(refs) + "\n")
            results.append(compare.RunResult(model, seed, test_hypotheses=str(folder / "t.hyp"),
                                             test_references=str(folder / "t.ref")))
    rows = compare.significance(results)
    assert [(r["baseline"], r["system"], r["seeds"]) for r in rows] == [
        ("transformer_dot", "rnn", "1"), ("transformer_dot", "rnn", "2"),
        ("transformer_dot", "rnn", "1 2")]
    for row in rows:
        seeds = [int(s) for s in row["seeds"].split()]
        read = lambda model, ext: sum(((tmp_path / f"{model}_seed{s}" / f"t.{ext}").read_text()
                                       .split("\n")[:-1] for s in seeds), [])
        _, want = PairedTest([("b", read("transformer_dot", "hyp")), ("s", read("rnn", "hyp"))],
                             {"BLEU": BLEU()}, [read("transformer_dot", "ref")],
                             test_type="bs", n_samples=1000)()
        assert row["p_value"] == want["BLEU"][1].p_value
        assert row["baseline_bleu"] == pytest.approx(want["BLEU"][0].score)
        assert row["system_bleu"] < row["baseline_bleu"] and row["p_value"] < 0.05
    paths = compare.write_report(results, tmp_path / "report", "cmd", "machine")
    assert len(list(csv.DictReader(open(paths["significance"], newline="")))) == 3
    assert "| transformer_dot | rnn | 1 2 |" in paths["report"].read_text()


def test_equal_time_reads_each_run_at_the_fastest_models_budget(compare, tmp_path):
    """T = the fastest model's mean final wall time; each run's best validation
    BLEU among those logged by T, its updates by then and the budget share."""
    fast = [compare.RunResult("fast", seed, validations=[(100, 20 + d, 10.0 + d),
                                                         (200, 40 + d, 15.0 + d)])
            for seed, d in ((1, -2.0), (2, 2.0))]  # final wall times 38 and 42: T = 40
    slow = [compare.RunResult("slow", 1, validations=[(100, 30, 12.0), (200, 39, 11.0),
                                                      (300, 90, 25.0)]),
            compare.RunResult("slow", 2, validations=[(100, 41, 30.0), (200, 80, 31.0)])]
    T, table = compare.equal_time(fast + slow + [compare.RunResult("x", 1, status="failed")])
    assert T == pytest.approx(40.0)
    # fast seed 1: both validations by T (best 13.0 after 200 updates); seed 2 logs its
    # second at 42 s > T, so only its first counts (12.0 after 100 updates)
    assert table["fast"]["val_bleu"] == (pytest.approx(12.5), pytest.approx(0.5 ** 0.5), 2)
    assert table["fast"]["steps"][0] == pytest.approx(150.0)
    # slow seed 1: best of the first two (12.0, not the later 11.0); seed 2: none by T
    assert table["slow"]["val_bleu"][0] == pytest.approx(12.0) and table["slow"]["val_bleu"][2] == 1
    assert table["slow"]["steps"][0] == 200 and table["slow"]["fraction"][0] == pytest.approx(2 / 3)
    assert "x" not in table
    report = compare.write_report(fast + slow, tmp_path, "cmd", "m")["report"].read_text()
    assert "## At equal wall time (40 s of training)" in report
    assert "| slow | 1 | 12.00 | 200 | 67% |" in report


def test_saved_result_is_reused_only_for_the_same_run(compare, tmp_path):
    """result.json round-trips a RunResult; another key, a failed run or a broken
    file is not reused."""
    run = synthetic_results(compare)[0]
    key = {"config_sha256": "abc", "override": {"seed_everything": 1, "trainer": {"max_steps": 9}}}
    compare.save_result(run, tmp_path, key)
    assert compare.load_result(tmp_path, key) == run
    assert compare.load_result(tmp_path, {**key, "config_sha256": "abd"}) is None
    assert compare.load_result(tmp_path, {**key, "override": {"seed_everything": 2}}) is None
    failed = compare.RunResult("rnn", 1, status="failed (exit code 1)")
    compare.save_result(failed, tmp_path, key)
    assert compare.load_result(tmp_path, key) is None
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(compare.ResultFileError, match=r"result.json is damaged: .*delete"):
        compare.load_result(tmp_path, key)  # not retrained silently (tests/commands/test_damaged_files.py)


def tiny_config(name: str, tmp_path: Path, data: Path) -> Path:
    """A shipped compare config with a tiny network and the 400-pair corpus."""
    raw = yaml.safe_load(CONFIGS[name].read_text())
    if name == "rnn":
        raw["model"]["rnn"].update(num_hiddens=32, num_layers=1)
    else:
        raw["model"]["config"].update(num_hiddens=32, ffn_num_hiddens=64, num_heads=2,
                                      num_enc_blks=1, num_dec_blks=1)
    raw["model"]["warmup_steps"] = 2
    raw["trainer"]["precision"] = "32-true"
    raw["data"].update(source=str(data), cache_dir=str(tmp_path / "cache"), vocab_size=400,
                       max_tokens=1024)
    path = tmp_path / f"compare_{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_compare_main_tiny_run(compare, multi30k_small, tmp_path):
    """Three tiny models, one seed, 6 updates each: every run trains, validates
    twice, is tested, and the report covers all of them."""
    configs = [str(tiny_config(name, tmp_path, multi30k_small)) for name in NAMES]
    out, record = tmp_path / "report", tmp_path / "docs" / "compare"
    results = compare.main([*configs, "--max-steps", "6", "--num-evals", "2", "--seeds", "1",
                            "--out", str(out), "--device", "cpu", "--threads", "1"])
    assert [(r.model, r.seed, r.status) for r in results] == [(n, 1, "ok") for n in NAMES]
    for r in results:
        assert r.precision == "32-true"  # the tiny configs' (from each run's saved config.yaml)
        assert r.steps == 6 and [v[0] for v in r.validations] == [3, 6]
        assert r.train_tokens_per_sec > 0 and r.peak_memory_mb > 0 and r.wall_time > 0
        assert 0 <= r.test_bleu <= 100 and 0 < r.test_chrf <= 100
        hyps = (out / f"{r.model}_seed1" / "test_2016_flickr.de.hyp").read_text().splitlines()
        refs = read_raw(multi30k_small, "test_2016_flickr", "de")
        assert r.test_bleu_lc_norm_tok == pytest.approx(
            tokenized_bleu(hyps, refs, "de")["bleu_lc_norm_tok"])
        assert 0 <= r.val_bleu_lc_norm_tok <= 100
        assert r.train_loss
        translator = load_translator(out / f"{r.model}_seed1" / "checkpoints" / "best.ckpt")
        assert translator.model.num_parameters() == r.parameters
        assert type(translator.model) is (RNNEncoderDecoder if r.model == "rnn" else Transformer)
        hyps = (out / f"{r.model}_seed1" / "test_2016_flickr.de.hyp").read_text().splitlines()
        assert len(hyps) == 50
    rows = list(csv.DictReader(open(out / "results.csv", newline="")))
    assert len(rows) == 3 + 2 * 3
    report = (out / "report.md").read_text()
    assert "- Precision: 32-true\n" in report
    first_table = report.split("| model |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert [tuple(row.split(" | ")[:2]) for row in first_table] == [(f"| {n}", "1")
                                                                    for n in NAMES]
    # paired bootstrap between every pair of the three models (one seed)
    tests = list(csv.DictReader(open(out / "significance.csv", newline="")))
    assert [(t["baseline"], t["system"], t["seeds"]) for t in tests] == [
        (NAMES[0], NAMES[1], "1"), (NAMES[0], NAMES[2], "1"), (NAMES[1], NAMES[2], "1")]
    assert "## Significance" in report and all(0 <= float(t["p_value"]) <= 1 for t in tests)
    # one attention heatmap of the same test sentence per model, in the report
    for n in NAMES:
        png = out / f"{n}_seed1" / "attention.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({n}_seed1/attention.png)" in report
    # --resume reads the finished runs back (nothing retrains) and writes the same report;
    # --record keeps them (finished before it was given) and the report in a folder for git
    logs = {n: (out / f"{n}_seed1" / "train.log").stat().st_mtime_ns for n in NAMES}
    again = compare.main([*configs, "--max-steps", "6", "--num-evals", "2", "--seeds", "1",
                          "--out", str(out), "--device", "cpu", "--threads", "1", "--resume",
                          "--record", str(record)])
    assert again == results
    assert {n: (out / f"{n}_seed1" / "train.log").stat().st_mtime_ns for n in NAMES} == logs
    assert "## At equal wall time" in (out / "report.md").read_text()
    # a run without result.json but with its started.json and last.ckpt (cut off after its
    # last checkpoint) goes on from last.ckpt: same weights, the log appended, not retrained
    (out / f"{NAMES[0]}_seed1" / "result.json").unlink()
    resumed = compare.main([*configs, "--max-steps", "6", "--num-evals", "2", "--seeds", "1",
                            "--out", str(out), "--device", "cpu", "--threads", "1", "--resume"])
    log = (out / f"{NAMES[0]}_seed1" / "train.log").read_text().splitlines()
    commands = [line for line in log if "scripts/train.py fit" in line]
    assert len(commands) == 2 and commands[1].endswith("--ckpt_path last")
    assert resumed[0].test_bleu == results[0].test_bleu
    assert resumed[0].process_seconds > results[0].process_seconds
    assert resumed[1:] == results[1:]
    # --report-only trains nothing: seed 2 is listed as not run yet
    rebuilt = compare.main([*configs, "--max-steps", "6", "--num-evals", "2", "--seeds", "1", "2",
                            "--out", str(out), "--device", "cpu", "--report-only"])
    assert rebuilt[:3] == resumed
    assert [(r.model, r.status) for r in rebuilt[3:]] == [(n, compare.NOT_RUN) for n in NAMES]
    assert not any((out / f"{n}_seed2").exists() for n in NAMES)
    report = (out / "report.md").read_text()
    assert f"- {NAMES[0]} seed 2: not run yet" in report
    # the record (--record) holds the first comparison without checkpoints or references;
    # with OUT gone, --report-only --record rebuilds it, heatmaps and p-values included
    assert not list(record.rglob("*.ckpt")) and not list(record.rglob("*.ref"))
    recorded = (record / "report.md").read_text()
    assert all(f"]({n}_seed1/attention.png)" in recorded for n in NAMES)
    shutil.rmtree(out)
    from_record = compare.main([*configs, "--max-steps", "6", "--num-evals", "2", "--seeds",
                                "1", "--out", str(out), "--device", "cpu", "--report-only",
                                "--record", str(record)])
    assert from_record == results
    assert "## Significance" in (out / "report.md").read_text()


@pytest.mark.slow
def test_report_names_runs_of_other_machines(compare, tmp_path):
    """Runs resumed from another machine are listed with it (their speed is not
    comparable), and so are runs of another precision."""
    runs = synthetic_results(compare)[:4]
    for r in runs:
        r.machine, r.precision = "CPU A", "32-true"
    runs[3].machine, runs[3].precision = "CPU B", "bf16-mixed"
    report = compare.write_report(runs, tmp_path, "cmd", "CPU A")["report"].read_text()
    assert "- Runs trained on other machines" in report
    assert "  - CPU B: rnn seed 2" in report and "  - CPU A: transformer_dot seed 1, " \
        "transformer_dot seed 2, rnn seed 1" in report
    assert "- Precision differs between runs" in report and "  - bf16-mixed: rnn seed 2" in report
    for r in runs:
        r.machine, r.precision = "CPU A", "32-true"
    same = compare.write_report(runs, tmp_path, "cmd", "CPU A")["report"].read_text()
    assert "other machines" not in same
    assert "- Precision: 32-true\n" in same and "differs" not in same
    described = compare.machine_description()
    assert f"{os.cpu_count()} cores" in described and f"torch {torch.__version__}" in described
    if Path("/proc/cpuinfo").is_file() and "cpu family" in Path("/proc/cpuinfo").read_text():
        assert " family " in described and " model " in described


def test_read_metrics_merges_the_versions_of_a_resumed_run(compare, tmp_path):
    """A resumed run logs a new version from its checkpoint's step on: its rows
    replace the older version's from there, earlier rows stay."""
    for version, steps in ((0, range(0, 10)), (1, range(6, 12))):
        folder = tmp_path / "lightning_logs" / f"version_{version}"
        folder.mkdir(parents=True)
        with open(folder / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "train_loss", "val_bleu"])
            for step in steps:
                writer.writerow([step, 10 * version + step, 1.0 if step % 4 == 3 else ""])
    merged = compare.read_metrics(tmp_path)
    assert sorted(merged) == list(range(1, 13))
    assert [merged[s]["train_loss"] for s in (6, 7, 12)] == [5.0, 16.0, 21.0]
    assert [s for s in sorted(merged) if "val_bleu" in merged[s]] == [4, 8, 12]


def test_speed_monitor_counts_on_after_a_resume():
    monitor = SpeedMonitor()
    monitor._start, monitor._train_time, monitor._tokens = 0.0, 12.5, 4000
    state = monitor.state_dict()
    assert state["train_tokens"] == 4000 and state["train_time"] == 12.5
    resumed = SpeedMonitor()
    resumed.load_state_dict(state)
    resumed.on_train_start(None, types.SimpleNamespace(device=torch.device("cpu")))
    assert resumed._train_time == 12.5 and resumed._tokens == 4000
    assert resumed.metrics(torch.device("cpu"))["wall_time"] >= state["wall_time"]


def test_only_a_run_cut_off_midway_is_continued(tmp_path):
    """--resume continues a run with the same key and a last.ckpt but no result.json;
    a run that ended (failed ones too) or has another key starts again."""
    import json

    from benchmarks.compare import STARTED_FILE, _interrupted

    key = {"config_sha256": "abc", "override": {"seed_everything": 1}}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / STARTED_FILE).write_text(json.dumps({"key": key, "process_seconds": 12.5}))
    assert _interrupted(tmp_path, key) == 12.5
    assert _interrupted(tmp_path, {**key, "config_sha256": "def"}) is None
    (tmp_path / "result.json").write_text("{}")
    assert _interrupted(tmp_path, key) is None


def _saved_precisions(run_dir: Path, *precisions: str) -> Path:
    """``run_dir`` with one saved ``config.yaml`` per attempt, as Lightning writes them."""
    for version, precision in enumerate(precisions):
        folder = run_dir / "lightning_logs" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({"trainer": {"precision": precision}}))
    return run_dir


def test_trained_precision_reads_every_attempt(compare, tmp_path):
    assert compare.trained_precision(tmp_path) == ""
    _saved_precisions(tmp_path / "a", "32-true", "32-true")
    assert compare.trained_precision(tmp_path / "a") == "32-true"
    # attempts in version order (version_10 after version_2), distinct values joined
    run = _saved_precisions(tmp_path / "b", "32-true", "32-true", *["16-mixed"] * 8, "bf16-mixed")
    assert compare.trained_precision(run) == "32-true+16-mixed+bf16-mixed"


def _kept_run(out: Path, args, name: str, seed: int, *precisions: str, finished=False) -> Path:
    """A run of ``name``/``seed`` that ``--resume`` keeps: cut off midway (its
    started.json matches, a last.ckpt), or ``finished`` (its result.json matches)."""
    import benchmarks.compare as machinery

    run_dir, override = machinery._run_dir_and_override(CONFIGS[name], seed, out, args)
    key = machinery._run_key(CONFIGS[name], override)
    _saved_precisions(run_dir, *precisions)
    if finished:
        machinery.save_result(machinery.RunResult(name, seed), run_dir, key)
    else:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
        (run_dir / machinery.STARTED_FILE).write_text(json.dumps({"key": key}))
    return run_dir


@pytest.mark.parametrize("earlier, fast_bf16, expected", [
    ((), True, None),                            # nothing trained yet: the config's
    (("32-true",), False, None),                 # float32 here too (the CPU fallback)
    (("32-true",), True, "32-true"),             # bf16 here, float32 before: go on in float32
    (("bf16-mixed",), True, None),               # bf16 both times
    (("bf16-mixed",), False, "refused"),         # bf16 only emulated here: refused
])
def test_comparison_precision_keeps_every_run_alike(compare, tmp_path, monkeypatch, capsys,
                                                    earlier, fast_bf16, expected):
    """A comparison continued on another CPU trains its remaining runs in the
    precision of the runs it keeps, or refuses (exit status 2, one line)."""
    import training.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "compare"
    argv = ["--resume", "--out", str(out), "--device", "cpu"]  # the configs: bf16-mixed (base)
    args = load_script("compare_attention").parse_args(argv)
    if earlier:
        _kept_run(out, args, "transformer_dot", 1, *earlier)
    # a run of another budget trains again from scratch: its precision does not count
    stale = _saved_precisions(out / "transformer_additive_seed1", "16-mixed")
    if expected == "refused":
        with pytest.raises(compare.PrecisionMismatch, match="trained in precision bf16-mixed"):
            compare.comparison_precision(out, args)
        with pytest.raises(SystemExit) as exit_info:
            compare.main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1
        assert "bf16-mixed" in err and "--out DIR" in err
        assert (stale / "lightning_logs").is_dir()  # nothing trained, nothing replaced
        # --report-only trains nothing, so nothing is refused
        assert [r.status for r in compare.main([*argv[1:], "--report-only"])] == \
            [compare.NOT_RUN] * 9
    else:
        assert compare.comparison_precision(out, args) == expected


def test_comparison_precision_follows_the_accelerator(compare, tmp_path, monkeypatch):
    """bf16 runs go on on a GPU machine, but not on its CPU (accelerator cpu)."""
    import training.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "compare"
    args = load_script("compare_attention").parse_args(["--resume", "--out", str(out)])
    _kept_run(out, args, "transformer_dot", 1, "bf16-mixed")
    assert compare.comparison_precision(out, args) is None  # accelerator auto: the GPU
    with pytest.raises(compare.PrecisionMismatch):
        compare.comparison_precision(out, args, accelerator="cpu")


def test_comparison_precision_is_none_when_nothing_is_left_to_train(compare, tmp_path,
                                                                   monkeypatch):
    import training.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "compare"
    args = load_script("compare_attention").parse_args(
        [str(CONFIGS["transformer_dot"]), "--seeds", "1", "--resume", "--out", str(out)])
    _kept_run(out, args, "transformer_dot", 1, "bf16-mixed", finished=True)
    assert compare.comparison_precision(out, args) is None  # all finished: nothing to pin
    args.seeds = [1, 2]
    with pytest.raises(compare.PrecisionMismatch):  # seed 2 would train in emulated bf16
        compare.comparison_precision(out, args)


def test_pinned_precision_reaches_the_training_command(compare, tmp_path, monkeypatch):
    """train() passes the pinned precision as --trainer.precision, outside the run's key."""
    import benchmarks.compare as machinery

    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(machinery.subprocess, "run", fake_run)
    key = {"config_sha256": "abc", "override": {"seed_everything": 1}}
    compare.train(CONFIGS["rnn"], tmp_path / "run", {"seed_everything": 1}, key=key,
                  precision="32-true")
    compare.train(CONFIGS["rnn"], tmp_path / "run2", {"seed_everything": 1}, key=key)
    assert commands[0][-2:] == ["--trainer.precision", "32-true"]
    assert "--trainer.precision" not in commands[1]
    started = json.loads((tmp_path / "run" / compare.STARTED_FILE).read_text())
    assert started["key"] == key



def _finished_run(compare, out: Path, args, config: Path, seed: int, **values) -> tuple:
    """A finished run of ``config``/``seed`` in ``out`` as run_one leaves one:
    result.json, test hypotheses and references, a heatmap, a checkpoint and logs."""
    import benchmarks.compare as machinery

    run_dir, override = machinery._run_dir_and_override(config, seed, out, args)
    key = machinery._run_key(config, override)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    _saved_precisions(run_dir, "32-true")
    hyp, ref, png = (run_dir / "test_2016_flickr.de.hyp", run_dir / "test_2016_flickr.de.ref",
                     run_dir / "attention.png")
    hyp.write_text("ein Hund .\nzwei Katzen .\n", encoding="utf-8")
    ref.write_text("REFERENCES\n", encoding="utf-8")
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    result = compare.RunResult(machinery.model_name(config), seed, test_bleu=30.5,
                               validations=[(3, 1.5, 20.0), (6, 3.0, 25.0)],
                               test_hypotheses=str(hyp), test_references=str(ref),
                               attention_plot=str(png), machine="machine A",
                               precision="32-true", **values)
    compare.save_result(result, run_dir, key)
    return run_dir, key, result


def test_record_keeps_a_run_without_checkpoints_or_references_and_restores_it(
        compare, multi30k_small, tmp_path):
    """record_run copies result.json (relative paths), hypotheses and heatmap only;
    restore_run rebuilds the run in another --out (the references read from the
    config's corpus) so that load_result reuses it; other settings are not restored."""
    import benchmarks.compare as machinery

    config = tiny_config("transformer_dot", tmp_path, multi30k_small)
    args = load_script("compare_attention").parse_args(
        [str(config), "--seeds", "1", "--out", str(tmp_path / "a"), "--resume"])
    run_dir, key, result = _finished_run(compare, tmp_path / "a", args, config, 1)
    record = tmp_path / "docs" / "compare"
    target = compare.record_run(run_dir, record)
    assert target == record / "transformer_dot_seed1"
    assert sorted(p.name for p in target.iterdir()) == [
        "attention.png", "result.json", "test_2016_flickr.de.hyp"]  # no refs, no checkpoints
    saved = json.loads((target / "result.json").read_text())
    assert saved["key"] == key and saved["result"]["test_hypotheses"] == "test_2016_flickr.de.hyp"
    assert saved["result"]["test_references"] == "test_2016_flickr.de.ref"

    # another clone or --out: the run folder in the key differs, the settings do not
    args.out = tmp_path / "b"
    new_dir, new_override = machinery._run_dir_and_override(config, 1, args.out, args)
    new_key = machinery._run_key(config, new_override)
    assert new_key != key
    data = (machinery._resolved(config)["data"], machinery._in_repo)  # the config's corpus
    (new_dir / "checkpoints").mkdir(parents=True)  # an interrupted run there is replaced
    assert compare.restore_run(target, new_dir, new_key, *data)
    restored = compare.load_result(new_dir, new_key)
    assert restored is not None and not (new_dir / "checkpoints").exists()
    expected = {**vars(result), "test_hypotheses": str(new_dir / "test_2016_flickr.de.hyp"),
                "test_references": str(new_dir / "test_2016_flickr.de.ref"),
                "attention_plot": str(new_dir / "attention.png")}
    assert json.dumps(vars(restored), sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert Path(restored.test_hypotheses).read_text() == Path(result.test_hypotheses).read_text()
    assert Path(restored.test_references).read_text().splitlines() == \
        read_raw(multi30k_small, "test_2016_flickr", "de")
    # a record of another seed or budget is not restored; a damaged one says what to do
    other = {**new_key, "override": {**new_key["override"], "seed_everything": 2}}
    assert not compare.restore_run(target, tmp_path / "c", other, *data)
    assert not (tmp_path / "c").exists()
    assert not compare.restore_run(record / "rnn_seed1", tmp_path / "c", new_key, *data)
    (target / "result.json").write_text("{cut")
    with pytest.raises(compare.ResultFileError, match=r"result.json is damaged: .*git checkout"):
        compare.restore_run(target, tmp_path / "c", new_key, *data)


def test_failed_runs_are_not_recorded(compare, tmp_path):
    key = {"config_sha256": "abc", "override": {"trainer": {"default_root_dir": str(tmp_path)}}}
    compare.save_result(compare.RunResult("rnn", 1, status="failed (exit code 1)"), tmp_path, key)
    assert compare.record_run(tmp_path, tmp_path / "record") is None
    assert compare.record_run(tmp_path / "missing", tmp_path / "record") is None
    assert not (tmp_path / "record").exists()


def test_comparison_precision_reads_restored_runs_from_their_result(compare, tmp_path,
                                                                    monkeypatch):
    """A run restored from a record has no Lightning logs: its result.json's
    precision decides (bf16 runs are refused where bf16 is emulated)."""
    import training.runtime as runtime
    import benchmarks.compare as machinery

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "compare"
    args = load_script("compare_attention").parse_args(
        [str(CONFIGS["transformer_dot"]), "--seeds", "1", "2", "--resume", "--out", str(out)])
    run_dir, override = machinery._run_dir_and_override(CONFIGS["transformer_dot"], 1, out, args)
    run_dir.mkdir(parents=True)
    compare.save_result(compare.RunResult("transformer_dot", 1, precision="bf16-mixed"), run_dir,
                        machinery._run_key(CONFIGS["transformer_dot"], override))
    assert not (run_dir / "lightning_logs").exists()
    with pytest.raises(compare.PrecisionMismatch, match="bf16-mixed"):
        compare.comparison_precision(out, args)
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert compare.comparison_precision(out, args) is None
