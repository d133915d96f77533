"""The attention comparison: runs (a ``scripts/train.py`` subprocess per
config and seed), their metrics, aggregation over seeds, plots and the
report. ``scripts/compare_attention.py`` is its command line; its docstring
describes the outputs and budgets.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import io
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from data.files import read_json  # noqa: E402
from inference.checkpoint import load_translator  # noqa: E402
from inference.translation import plot_cross_attention  # noqa: E402

from .selection import evaluate_translator  # noqa: E402

__all__ = ["RunResult", "DEFAULT_CONFIGS", "run_override", "run_one", "aggregate", "equal_time",
           "save_result", "load_result", "ResultFileError", "finished_run", "machine_description", "NOT_RUN",
           "paired_bootstrap", "significance", "write_report", "plot_curves", "run_comparison"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [REPO / "configs" / f"compare_{name}.yaml"
                   for name in ("transformer_dot", "transformer_additive", "rnn")]
SPEED_MONITOR = "training.callbacks.SpeedMonitor"
#: Status of a run that ``--report-only`` found unfinished.
NOT_RUN = "not run yet (--report-only)"

#: Report columns: RunResult field, heading, number format. The parameter
#: count is the same for every seed, so it is shown without a standard deviation.
COLUMNS = [
    ("parameters", "parameters", "{:,.0f}"),
    ("train_tokens_per_sec", "train tokens/s", "{:,.0f}"),
    ("peak_memory_mb", "peak memory (MiB)", "{:,.0f}"),
    ("wall_time", "wall time (s)", "{:,.0f}"),
    ("val_bleu", "val BLEU", "{:.2f}"),
    ("val_chrf", "val chrF", "{:.2f}"),
    ("val_bleu_lc_norm_tok", "val papers' BLEU (lc.norm.tok)", "{:.2f}"),
    ("test_bleu", "test BLEU", "{:.2f}"),
    ("test_chrf", "test chrF", "{:.2f}"),
    ("test_bleu_lc_norm_tok", "test papers' BLEU (lc.norm.tok)", "{:.2f}"),
]
CSV_FIELDS = ["model", "seed", "status", "parameters", "train_tokens_per_sec", "peak_memory_mb",
              "wall_time", "process_seconds", "steps", "best_step", "val_bleu", "val_chrf", "val_bleu_lc_norm_tok",
              "test_bleu", "test_chrf", "test_bleu_lc_norm_tok"]


@dataclass
class RunResult:
    """What one training run (one model, one seed) measured.

    Attributes:
        model: the config's name without ``compare_`` (e.g. ``transformer_dot``).
        seed: ``seed_everything`` and the data module's shuffling seed.
        status: ``"ok"``, or why the run has no results.
        parameters: trainable parameters (tied weights once).
        train_tokens_per_sec: target tokens per second of training, validation
            excluded (at the last validation).
        peak_memory_mb: CUDA tensor peak on a GPU, process peak RSS on a CPU.
        wall_time: seconds from the start of training to the last validation,
            validation included.
        process_seconds: the whole ``scripts/train.py`` subprocess (start-up,
            data loading and tokenization included).
        steps: optimizer updates done.
        best_step: update of the best validation BLEU (``best.ckpt``).
        val_bleu, val_chrf: the best validation BLEU and the chrF of that validation.
        val_bleu_lc_norm_tok: ``best.ckpt`` on the validation split (greedy),
            scored as Multi30k papers score (:func:`training.evaluation.tokenized_bleu`).
        test_bleu, test_chrf: ``best.ckpt`` on the test split, greedy decoding.
        test_bleu_lc_norm_tok: the same hypotheses scored as Multi30k papers
            score them (:func:`training.evaluation.tokenized_bleu`).
        train_loss: ``(step, loss)`` as logged.
        validations: ``(step, wall_time, val_bleu)`` per validation.
        test_hypotheses, test_references: files of the test outputs and raw
            references, one line each (for the paired significance tests).
        attention_plot: heatmap of the encoder–decoder attention on the first
            test sentence (the same sentence for every model).
        machine: :func:`machine_description` of the machine that trained it.
    """

    model: str
    seed: int
    status: str = "ok"
    parameters: float = math.nan
    train_tokens_per_sec: float = math.nan
    peak_memory_mb: float = math.nan
    wall_time: float = math.nan
    process_seconds: float = math.nan
    steps: int = 0
    best_step: int = -1
    val_bleu: float = math.nan
    val_chrf: float = math.nan
    val_bleu_lc_norm_tok: float = math.nan
    test_bleu: float = math.nan
    test_chrf: float = math.nan
    test_bleu_lc_norm_tok: float = math.nan
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    validations: list[tuple[int, float, float]] = field(default_factory=list)
    test_hypotheses: str = ""
    test_references: str = ""
    attention_plot: str = ""
    machine: str = ""


# ------------------------------------------------------------------ running
def model_name(config: Path) -> str:
    """``configs/compare_rnn.yaml`` -> ``rnn``."""
    return Path(config).stem.removeprefix("compare_")


def _format_time(seconds: float) -> str:
    """Seconds -> Lightning's ``DD:HH:MM:SS``."""
    seconds = int(round(seconds))
    days, hours = seconds // 86400, seconds // 3600 % 24
    return f"{days:02d}:{hours:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_override(raw: dict, run_dir: Path, seed: int, max_steps: int | None = None,
                 max_minutes: float | None = None, num_evals: int = 3) -> dict:
    """The override YAML (as a dict) that turns a shipped config into one comparison run.

    Output folders move under ``run_dir`` (the logger becomes a CSVLogger
    there; each callback's ``dirpath`` keeps its place relative to the
    config's ``default_root_dir``), ``SpeedMonitor`` is added if missing,
    the seed and budget are set, and validation runs ``num_evals`` times at
    equal step intervals.

    Raises:
        ValueError: if neither ``max_steps`` nor the config gives a step budget.
    """
    trainer = raw.get("trainer", {})
    steps = max_steps or trainer.get("max_steps")
    if not steps or steps < 0:
        raise ValueError("no step budget: pass --max-steps or set trainer.max_steps in the config")
    root = Path(trainer.get("default_root_dir", "."))
    callbacks = []
    for callback in copy.deepcopy(trainer.get("callbacks") or []):
        args = callback.get("init_args") or {}
        if "dirpath" in args:
            dirpath = Path(args["dirpath"])
            relative = dirpath.relative_to(root) if dirpath.is_relative_to(root) else dirpath.name
            args["dirpath"] = str(run_dir / relative)
        callbacks.append(callback)
    if not any(c.get("class_path") == SPEED_MONITOR for c in callbacks):
        callbacks.append({"class_path": SPEED_MONITOR})
    override = {
        "seed_everything": seed,
        "trainer": {
            "default_root_dir": str(run_dir),
            "max_epochs": -1,
            "max_steps": int(steps),
            "val_check_interval": max(1, int(steps) // max(1, num_evals)),
            "check_val_every_n_epoch": None,
            "log_every_n_steps": max(1, min(int(trainer.get("log_every_n_steps", 50)),
                                            int(steps) // 20)),
            "enable_progress_bar": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run_dir)}},
            "callbacks": callbacks,
        },
        "data": {"seed": seed},
    }
    if max_minutes:
        override["trainer"]["max_time"] = _format_time(60 * max_minutes)
    return override


def train(config: Path, run_dir: Path, override: dict,
          threads: int | None = None) -> tuple[int, float]:
    """Train ``config`` + ``override`` as a ``scripts/train.py`` subprocess (cwd: the repository).

    ``threads`` sets ``OMP_NUM_THREADS`` of the subprocess (None: inherited).

    Returns:
        The exit code and the subprocess's wall time in seconds; its output
        is in ``run_dir/train.log``.
    """
    if run_dir.exists():
        shutil.rmtree(run_dir)  # stale checkpoints would become best-v1.ckpt
    run_dir.mkdir(parents=True)
    override_path = run_dir / "override.yaml"
    override_path.write_text(yaml.safe_dump(override, sort_keys=False))
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "fit",
               "--config", str(Path(config).resolve()), "--config", str(override_path)]
    start = time.perf_counter()
    with open(run_dir / "train.log", "w") as log:
        log.write(shlex.join(command) + "\n")
        log.flush()
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env=env).returncode
    return code, time.perf_counter() - start


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """The newest ``lightning_logs/version_N/metrics.csv`` of a run, merged by step.

    Keys are optimizer updates done: Lightning's ``step`` column holds the
    0-based index of the latest update (a validation after 100 updates is
    logged at step 99), so 1 is added.
    """
    files = sorted(run_dir.glob("lightning_logs/version_*/metrics.csv"),
                   key=lambda p: int(p.parent.name.split("_")[-1]))
    if not files:
        return {}
    steps: dict[int, dict[str, float]] = {}
    with open(files[-1], newline="") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}
            steps.setdefault(int(row["step"]) + 1, {}).update(values)
    return steps


def fill_from_metrics(result: RunResult, steps: dict[int, dict[str, float]]) -> None:
    """Curves, best validation and the last SpeedMonitor values of one run."""
    result.train_loss = [(s, m["train_loss"]) for s, m in sorted(steps.items())
                         if "train_loss" in m]
    result.validations = [(s, m.get("wall_time", math.nan), m["val_bleu"])
                          for s, m in sorted(steps.items()) if "val_bleu" in m]
    result.steps = max(steps, default=0)
    if result.validations:
        best = max(range(len(result.validations)), key=lambda i: result.validations[i][2])
        result.best_step = result.validations[best][0]  # the first of equal maxima, as best.ckpt
        result.val_bleu = steps[result.best_step]["val_bleu"]
        result.val_chrf = steps[result.best_step].get("val_chrf", math.nan)
    speed = [m for _, m in sorted(steps.items()) if "train_tokens_per_sec" in m]
    if speed:
        result.train_tokens_per_sec = speed[-1]["train_tokens_per_sec"]
        result.peak_memory_mb = max(m["peak_memory_mb"] for m in speed)
        result.wall_time = speed[-1]["wall_time"]


def _in_repo(path: str) -> str:
    """A relative path of a config, read from the repository root as training did."""
    return path if os.path.isabs(path) or not (REPO / path).exists() else str(REPO / path)


def evaluate_test(ckpt: Path, device: str, out_dir: Path) -> tuple[dict, int]:
    """Greedy test-split scores of a checkpoint (hypotheses, references and an
    attention heatmap written to ``out_dir``), and its papers' BLEU on val.

    Returns:
        :func:`training.selection.evaluate_translator`'s scores (cased BLEU,
        chrF and the papers' tokenized BLEU) and the parameter count.
    """
    translator = load_translator(ckpt, device)
    loaded = translator.load_split(resolve=_in_repo)
    hyps, scores = evaluate_translator(translator, translator.decoding(beam_size=1),
                                       device=device, resolve=_in_repo, loaded=loaded)
    stem = out_dir / f"{scores['split']}.{scores['tgt_lang']}"
    scores["hypotheses"], scores["references"] = f"{stem}.hyp", f"{stem}.ref"
    Path(scores["hypotheses"]).write_text("\n".join(hyps) + "\n", encoding="utf-8")
    Path(scores["references"]).write_text("\n".join(loaded[1]) + "\n", encoding="utf-8")
    valid_split = translator.data_hparams.get("valid_split")
    if valid_split:  # the papers' BLEU on val too (the logs hold only cased val BLEU)
        _, val_scores = evaluate_translator(translator, translator.decoding(beam_size=1),
                                            valid_split, device=device, resolve=_in_repo)
        scores["val_bleu_lc_norm_tok"] = val_scores["bleu_lc_norm_tok"]
    # The same test sentence for every model: how its attention aligns.
    (nbest,) = translator.translate_ids(translator.tokenizer.encode(loaded[0][:1]),
                                        translator.decoding(beam_size=1), device)
    scores["attention_plot"] = str(out_dir / "attention.png")
    with contextlib.redirect_stderr(io.StringIO()):
        plot_cross_attention(translator, loaded[0][0], nbest[0], scores["attention_plot"], device)
    return scores, translator.model.num_parameters()


RESULT_FILE = "result.json"


class ResultFileError(ValueError):
    """A finished run's ``result.json`` that cannot be read; the message says what to do."""


def _run_key(config: Path, override: dict) -> dict:
    """What makes two runs the same: the config file's bytes and the override (seed, budget, folders)."""
    return {"config_sha256": hashlib.sha256(Path(config).read_bytes()).hexdigest(),
            "override": override}


def save_result(result: RunResult, run_dir: Path, key: dict) -> Path:
    """Write ``run_dir/result.json`` (the :class:`RunResult` and the run's key),
    atomically, so ``--resume`` can reuse a finished run."""
    path = run_dir / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"key": key, "result": asdict(result)}, indent=1))
    os.replace(tmp, path)
    return path


def load_result(run_dir: Path, key: dict) -> RunResult | None:
    """The :class:`RunResult` of a finished run in ``run_dir`` whose config and
    override equal ``key`` and whose status is ok; None otherwise (no file,
    another budget, seed or config, or a failed run).

    Raises:
        ResultFileError: if ``result.json`` is there but damaged (empty, cut
            short, not JSON): a finished run would otherwise be trained again
            silently; the message names the file and the two ways out.
    """
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    saved = read_json(path, ResultFileError,
                      f"delete {run_dir} to train that run again, or restore the file")
    if not isinstance(saved, dict) or saved.get("key") != json.loads(json.dumps(key)):
        return None
    known = {f.name for f in fields(RunResult)}
    values = {k: v for k, v in saved.get("result", {}).items() if k in known}
    for name in ("train_loss", "validations"):
        values[name] = [tuple(point) for point in values.get(name, [])]
    try:
        result = RunResult(**values)
    except TypeError:
        return None
    return result if result.status == "ok" else None


def _run_dir_and_override(config: Path, seed: int, out: Path,
                          args: argparse.Namespace) -> tuple[Path, dict]:
    run_dir = out / f"{model_name(config)}_seed{seed}"
    raw = yaml.safe_load(Path(config).read_text())
    return run_dir, run_override(raw, run_dir, seed, args.max_steps, args.max_minutes,
                                 args.num_evals)


def finished_run(config: Path, seed: int, out: Path, args: argparse.Namespace) -> RunResult | None:
    """The saved result of this (config, seed) under ``out`` if it finished with
    the same config file, seed and budget (:func:`load_result`), else None."""
    run_dir, override = _run_dir_and_override(config, seed, out, args)
    return load_result(run_dir, _run_key(config, override))


def run_one(config: Path, seed: int, out: Path, args: argparse.Namespace,
            machine: str = "") -> RunResult:
    """Train, read the logs and test one (config, seed); the result is saved
    in the run folder (``result.json``, see :func:`save_result`)."""
    result = RunResult(model_name(config), seed, machine=machine)
    run_dir, override = _run_dir_and_override(config, seed, out, args)
    key = _run_key(config, override)
    code, result.process_seconds = train(config, run_dir, override, args.threads)
    fill_from_metrics(result, read_metrics(run_dir))
    ckpt_dir = run_dir / "checkpoints"
    ckpt = ckpt_dir / "best.ckpt" if (ckpt_dir / "best.ckpt").is_file() else ckpt_dir / "last.ckpt"
    if code != 0:
        result.status = f"failed (exit code {code}, see {run_dir / 'train.log'})"
    elif not ckpt.is_file():
        result.status = "no checkpoint (no validation ran: raise the budget or --num-evals)"
    else:
        scores, result.parameters = evaluate_test(ckpt, args.device, run_dir)
        result.test_bleu, result.test_chrf = scores["bleu"], scores["chrf"]
        result.test_bleu_lc_norm_tok = scores["bleu_lc_norm_tok"]
        result.test_hypotheses, result.test_references = scores["hypotheses"], scores["references"]
        result.attention_plot = scores["attention_plot"]
        result.val_bleu_lc_norm_tok = scores.get("val_bleu_lc_norm_tok", math.nan)
    save_result(result, run_dir, key)
    return result


# ------------------------------------------------------------- significance
def _lines(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").split("\n")[:-1]


def paired_bootstrap(baseline: list[str], system: list[str], references: list[str],
                     n_samples: int = 1000) -> dict:
    """sacreBLEU's paired bootstrap resampling (``paired_bs``) of ``system``
    against ``baseline`` on the same ``references``, cased BLEU.

    Returns:
        ``{"baseline_bleu", "system_bleu", "p_value", "signature"}``: the p-value
        of the null hypothesis that the system is no better or worse than the
        baseline (sacreBLEU's, two-sided as it computes it).

    Source: Koehn 2004, "Statistical Significance Tests for Machine
    Translation Evaluation"; sacreBLEU's ``--paired-bs`` (``sacrebleu.significance``).
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    signatures, scores = PairedTest([("baseline", baseline), ("system", system)],
                                    {"BLEU": BLEU()}, [references], test_type="bs",
                                    n_samples=n_samples)()
    base, other = scores["BLEU"]
    return {"baseline_bleu": float(base.score), "system_bleu": float(other.score),
            "p_value": float(other.p_value), "signature": str(signatures["BLEU"])}


def significance(results: list[RunResult], n_samples: int = 1000) -> list[dict]:
    """Paired bootstrap p-values on the test split between every pair of models
    (in the order of ``results``: the first model is each pair's baseline):
    per seed both models have, and
    across seeds (each model's outputs of those seeds concatenated, the
    references repeated alongside).

    Returns:
        Rows ``{"baseline", "system", "seeds", "baseline_bleu", "system_bleu",
        "p_value", "signature"}``; empty if fewer than two models have test
        outputs.
    """
    runs = {(r.model, r.seed): r for r in results if r.status == "ok" and r.test_hypotheses}
    models = list(dict.fromkeys(model for model, _ in runs))
    rows = []
    for i, baseline in enumerate(models):
        for system in models[i + 1:]:
            seeds = [seed for (model, seed) in runs if model == baseline
                     and (system, seed) in runs]
            groups = [[seed] for seed in seeds] + ([seeds] if len(seeds) > 1 else [])
            for group in groups:
                base, other, refs = [], [], []
                for seed in group:
                    base += _lines(runs[baseline, seed].test_hypotheses)
                    other += _lines(runs[system, seed].test_hypotheses)
                    refs += _lines(runs[baseline, seed].test_references)
                row = paired_bootstrap(base, other, refs, n_samples)
                rows.append({"baseline": baseline, "system": system,
                             "seeds": " ".join(map(str, group)), **row})
    return rows


# ---------------------------------------------------------------- reporting
def aggregate(results: list[RunResult]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per model and report column: (mean, sample std or NaN for one run, runs), over ok runs."""
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for model in dict.fromkeys(r.model for r in results):
        runs = [r for r in results if r.model == model and r.status == "ok"]
        table[model] = {}
        for name in [c[0] for c in COLUMNS] + ["process_seconds", "steps", "best_step"]:
            values = np.array([getattr(r, name) for r in runs], dtype=float)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if len(values) else math.nan
            std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            table[model][name] = (mean, std, len(values))
    return table


def equal_time(results: list[RunResult]) -> tuple[float, dict[str, dict[str, tuple]]]:
    """The comparison at equal training wall time, read from the validation curves.

    The time ``T`` is the shortest mean (over seeds) final wall time of any
    model: when the fastest model has spent its update budget. Each run's
    score at ``T`` is its best validation BLEU among the validations logged
    at or before ``T`` (what ``best.ckpt`` would hold had training stopped
    there); its updates by ``T`` are those of its last such validation.

    Returns:
        ``(T, table)``; ``table[model]`` holds ``"val_bleu"`` and ``"steps"``
        as (mean, sample std or NaN, runs) over the runs with a validation by
        ``T``, and ``"fraction"``, the mean share of the update budget done by
        ``T``. ``T`` is NaN (and the table empty) without wall times.
    """
    ok = [r for r in results if r.status == "ok" and r.validations]
    finals: dict[str, list[float]] = {}
    for r in ok:
        if not math.isnan(r.validations[-1][1]):
            finals.setdefault(r.model, []).append(r.validations[-1][1])
    if not finals:
        return math.nan, {}
    budget = min(float(np.mean(v)) for v in finals.values())
    table: dict[str, dict[str, tuple]] = {}
    for model in dict.fromkeys(r.model for r in ok):
        bleu, steps, fraction = [], [], []
        for r in (r for r in ok if r.model == model):
            before = [v for v in r.validations if not math.isnan(v[1]) and v[1] <= budget + 1e-6]
            if before:
                bleu.append(max(v[2] for v in before))
                steps.append(before[-1][0])
                fraction.append(before[-1][0] / r.validations[-1][0])
        stats = {}
        for name, values in (("val_bleu", bleu), ("steps", steps), ("fraction", fraction)):
            mean = float(np.mean(values)) if values else math.nan
            std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            stats[name] = (mean, std, len(values))
        table[model] = stats
    return budget, table


def _cell(mean: float, std: float, fmt: str) -> str:
    if math.isnan(mean):
        return "–"
    return fmt.format(mean) + ("" if math.isnan(std) else " ± " + fmt.format(std))


def _number(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        f"{value:.10g}" if isinstance(value, float) else str(value)


def _mean_curve(curves: list[list[tuple[float, ...]]], x: int, y: int) -> tuple[list, list]:
    """Mean over seeds of points matched by position (seeds log at the same steps)."""
    n = min(len(c) for c in curves)
    xs = [float(np.mean([c[i][x] for c in curves])) for i in range(n)]
    ys = [float(np.mean([c[i][y] for c in curves])) for i in range(n)]
    return xs, ys


def plot_curves(results: list[RunResult], path: Path, attr: str, x: int, y: int,
                xlabel: str, ylabel: str, title: str) -> None:
    """One colour per model: each seed faint, the mean over seeds solid."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, model in enumerate(dict.fromkeys(r.model for r in results)):
        color = f"C{i}"
        curves = [getattr(r, attr) for r in results if r.model == model and getattr(r, attr)]
        curves = [[p for p in c if not math.isnan(p[x]) and not math.isnan(p[y])] for c in curves]
        curves = [c for c in curves if c]
        for curve in curves:
            ax.plot([p[x] for p in curve], [p[y] for p in curve], color=color, alpha=0.25,
                    linewidth=1)
        if curves:
            xs, ys = _mean_curve(curves, x, y)
            ax.plot(xs, ys, color=color, linewidth=2, marker="o" if len(xs) < 30 else None,
                    markersize=4, label=f"{model} (mean of {len(curves)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: list[RunResult], out: Path, command: str, machine: str,
                 budget: str = "") -> dict[str, Path]:
    """Write ``report.md``, ``results.csv`` and the three plots for ``results`` into ``out``.

    Returns:
        The written files by name (``report``, ``csv``, ``val_bleu_steps``,
        ``val_bleu_time``, ``train_loss``, and ``significance`` when two models
        have test outputs: :func:`significance`'s rows as CSV).
    """
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(results)
    paths = {"report": out / "report.md", "csv": out / "results.csv",
             "val_bleu_steps": out / "val_bleu_steps.png",
             "val_bleu_time": out / "val_bleu_time.png", "train_loss": out / "train_loss.png"}

    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in results:
            writer.writerow({k: _number(getattr(r, k)) for k in CSV_FIELDS})
        for model, stats in table.items():
            for kind, index in (("mean", 0), ("std", 1)):
                row = {"model": model, "seed": kind,
                       "status": f"{stats['val_bleu'][2]} runs"}
                row.update({k: _number(v[index]) for k, v in stats.items()})
                writer.writerow(row)

    plot_curves(results, paths["val_bleu_steps"], "validations", 0, 2, "optimizer updates",
                "validation BLEU (greedy)", "Validation BLEU against updates")
    plot_curves(results, paths["val_bleu_time"], "validations", 1, 2,
                "training wall-clock seconds (validation included)", "validation BLEU (greedy)",
                "Validation BLEU against time")
    plot_curves(results, paths["train_loss"], "train_loss", 0, 1, "optimizer updates",
                "training loss (label-smoothed CE)", "Training loss")

    header = "| model | runs | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = ["# Attention comparison", "",
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
             f"`scripts/compare_attention.py`.", "",
             f"- Command: `{command}`", f"- Machine: {machine}"]
    if budget:
        lines.append(f"- Budget: {budget}")
    machines = dict.fromkeys(r.machine for r in results if r.machine)
    if len(machines) > 1 or (machines and machine not in machines):
        lines.append("- Runs trained on other machines (their speed and wall time are not "
                     "comparable with the others'):")
        lines += [f"  - {m}: " + ", ".join(f"{r.model} seed {r.seed}" for r in results
                                            if r.machine == m) for m in machines]
    lines += ["", header, "|" + "---|" * (len(COLUMNS) + 2)]
    for model, stats in table.items():
        n = stats["val_bleu"][2]
        cells = [_cell(stats[name][0], math.nan if name == "parameters" else stats[name][1], fmt)
                 for name, _, fmt in COLUMNS]
        lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
    budget_time, at_time = equal_time(results)
    if at_time:
        lines += ["", f"## At equal wall time ({budget_time:,.0f} s of training)", "",
                  "The same runs read at the wall time when the fastest model had spent its "
                  "update budget: each run's best validation BLEU (greedy) among the "
                  "validations logged by then, and its updates by then.", "",
                  "| model | runs | val BLEU by then | updates by then | share of the budget |",
                  "|---|---|---|---|---|"]
        for model, stats in at_time.items():
            lines.append(f"| {model} | {stats['val_bleu'][2]} | "
                         f"{_cell(*stats['val_bleu'][:2], '{:.2f}')} | "
                         f"{_cell(*stats['steps'][:2], '{:,.0f}')} | "
                         f"{_cell(stats['fraction'][0], math.nan, '{:.0%}')} |")
    tests = significance(results)
    if tests:
        paths["significance"] = out / "significance.csv"
        with open(paths["significance"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(tests[0]))
            writer.writeheader()
            writer.writerows(tests)
        lines += ["", "## Significance (test split, cased BLEU)", "",
                  "sacreBLEU paired bootstrap resampling (`paired_bs`, 1000 resamples; "
                  f"`{tests[0]['signature']}`): per seed, and across seeds (the seeds' "
                  "outputs concatenated). p < 0.05: the difference is unlikely to be noise.", "",
                  "| baseline | system | seeds | baseline BLEU | system BLEU | p-value |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {t['baseline']} | {t['system']} | {t['seeds']} | {t['baseline_bleu']:.2f} "
                  f"| {t['system_bleu']:.2f} | {t['p_value']:.4f} |" for t in tests]
    plots = {}
    for r in results:  # one heatmap per model: its first seed's
        if r.status == "ok" and r.attention_plot and Path(r.attention_plot).is_file():
            plots.setdefault(r.model, (r.seed, r.attention_plot))
    if plots:
        lines += ["", "## Attention on the first test sentence", "",
                  "Encoder–decoder attention of each model (first seed) while it reads its own "
                  "greedy translation of the first test sentence: the Transformers' last "
                  "decoder block (mean over heads), the GRU's additive attention.", ""]
        for model, (seed, plot) in plots.items():
            relative = os.path.relpath(plot, out)
            lines += [f"![{model}, seed {seed}]({relative})", ""]
    failed = [r for r in results if r.status != "ok"]
    if failed:
        lines += ["", "Runs without results:", ""]
        lines += [f"- {r.model} seed {r.seed}: {r.status}" for r in failed]
    lines += [
        "", "Mean ± sample standard deviation over seeds (no ± with one run). "
        "Parameters: trainable, tied embeddings counted once. Train tokens/s: real "
        "target tokens (EOS included, padding not) per second of training, validation "
        "excluded. Peak memory: CUDA tensor peak (`torch.cuda.max_memory_allocated`) "
        "on a GPU, peak resident set size of the training process on a CPU. Wall time: "
        "training start to the last validation, validations included (start-up and "
        "tokenization not). Val BLEU/chrF: the best validation (the one `best.ckpt` "
        "holds); test BLEU/chrF: `best.ckpt` on the test split. Papers' BLEU: `best.ckpt` "
        "on val and test scored as Multi30k papers score (lowercased, Moses-normalized "
        "and -tokenized, against the official lc.norm.tok references). All decoding is greedy, "
        "scores are sacreBLEU's (BLEU 13a, chrF) in percent. Per-run values: "
        "`results.csv`.", "",
        "![validation BLEU against updates](val_bleu_steps.png)", "",
        "![validation BLEU against time](val_bleu_time.png)", "",
        "![training loss](train_loss.png)", ""]
    paths["report"].write_text("\n".join(lines))
    return paths


def machine_description() -> str:
    """Accelerator, CPU model (with its family/model numbers and the vector
    extensions that decide its speed: one "AMD EPYC" name covers Zen 2 with
    AVX2 only and Zen 4 with AVX512-BF16), core count, library versions."""
    cpu = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in info:
        cpu = info["model name"]
        if "cpu family" in info and "model" in info:
            cpu += f" family {info['cpu family']} model {info['model']}"
        # the same probes as training.runtime.cpu_has_fast_bf16
        isa = [name for name, probe in (("AVX2", "_is_avx2_supported"),
                                        ("AVX512", "_is_avx512_supported"),
                                        ("AVX512-BF16", "_is_avx512_bf16_supported"),
                                        ("AMX", "_is_amx_tile_supported"))
               if getattr(torch.cpu, probe, lambda: False)()]
        if isa:
            cpu += f" ({', '.join(isa)})"
    parts = [f"{cpu}, {os.cpu_count()} cores", f"torch {torch.__version__}",
             f"Python {platform.python_version()}", platform.system()]
    if torch.cuda.is_available():
        parts.insert(0, f"GPU {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)


def run_comparison(args, argv: list[str]) -> list[RunResult]:
    """Run the comparison that ``args`` (the options of
    ``scripts/compare_attention.py``, given as ``argv``) describe: train and
    test every (config, seed), rewriting the report after each; returns one
    :class:`RunResult` per run."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out.resolve()
    command = shlex.join(["python", "scripts/compare_attention.py", *argv])
    machine = machine_description()
    budget = (f"{args.max_steps or 'config'} updates"
              + (f", at most {args.max_minutes:g} min" if args.max_minutes else "")
              + f" per run, {args.num_evals} validations, seeds {args.seeds}")
    results: list[RunResult] = []
    start = time.perf_counter()
    report_only = getattr(args, "report_only", False)
    for seed in args.seeds:  # seed by seed: a cut-short comparison has every model's first seeds
        for config in args.configs:
            result = finished_run(config, seed, out, args) if args.resume or report_only else None
            reused = result is not None
            if not reused and report_only:
                results.append(RunResult(model_name(config), seed, status=NOT_RUN))
                continue
            if not reused:
                print(f"[compare] {model_name(config)} seed {seed}: training ({config})",
                      flush=True)
            result = result or run_one(config, seed, out, args, machine)
            results.append(result)
            print(f"[compare] {result.model} seed {result.seed}: {result.status}"
                  f"{' (finished before, reused)' if reused else ''}, "
                  f"val BLEU {result.val_bleu:.2f}, test BLEU {result.test_bleu:.2f}, "
                  f"{result.train_tokens_per_sec:,.0f} tokens/s, "
                  f"{result.process_seconds:.0f} s training process, "
                  f"{time.perf_counter() - start:.0f} s so far", flush=True)
            if not reused:  # after every trained run, so a stopped comparison keeps its report
                write_report(results, out, command, machine, budget)
    write_report(results, out, command, machine, budget)
    print(f"[compare] report: {out / 'report.md'}")
    return results
