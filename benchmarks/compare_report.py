"""The attention comparison's results and report: the per-run record
(:class:`RunResult`), paired bootstrap significance (sacreBLEU's ``paired_bs``),
aggregation over seeds, the equal-wall-time view, plots and ``report.md``.
:mod:`benchmarks.compare` runs the comparison and calls :func:`write_report`.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.significance import paired_bootstrap  # noqa: E402

__all__ = ["COLUMNS", "CSV_FIELDS", "NOT_RUN", "RunResult", "aggregate", "convergence",
           "equal_time",
           "paired_bootstrap", "plot_curves", "significance", "write_report"]

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
              "wall_time", "process_seconds", "steps", "best_step", "val_bleu", "val_chrf",
              "val_bleu_lc_norm_tok",
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
            scored as Multi30k papers score (:func:`evaluation.metrics.tokenized_bleu`).
        test_bleu, test_chrf: ``best.ckpt`` on the test split, greedy decoding.
        test_bleu_lc_norm_tok: the same hypotheses scored as Multi30k papers
            score them (:func:`evaluation.metrics.tokenized_bleu`).
        train_loss: ``(step, loss)`` as logged.
        validations: ``(step, wall_time, val_bleu)`` per validation.
        test_hypotheses, test_references: files of the test outputs and raw
            references, one line each (for the paired significance tests).
        attention_plot: heatmap of the encoder–decoder attention on the first
            test sentence (the same sentence for every model).
        machine: :func:`machine_description` of the machine that trained it.
        precision: ``trainer.precision`` it trained in (after the CPU fallback of
            :func:`training.runtime.resolve_cpu_precision`), from its saved
            ``config.yaml``; several joined by ``+`` if its attempts differed.
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
    precision: str = ""



# ------------------------------------------------------------- significance
def _lines(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").split("\n")[:-1]


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


def convergence(results: list[RunResult], fraction: float = 0.1, level: float = 0.5
                ) -> dict[str, dict[str, tuple]]:
    """Whether validation BLEU had levelled off by the end of the budget.

    Per run: its last validation BLEU minus the BLEU of its last validation at or
    before ``(1 - fraction)`` of its final validation's update (with 10
    validations of a 4000-update budget, update 4000 against update 3600).

    Args:
        fraction: the closing share of the updates read (0.1: the last 10%).
        level: a mean change within ``±level`` BLEU counts as levelled off.

    Returns:
        ``table[model]`` with ``"from"`` and ``"to"`` (mean update of the two
        validations), ``"from_bleu"``, ``"to_bleu"`` and ``"change"`` as (mean,
        sample std or NaN, runs) over the ok runs with two such validations, and
        ``"verdict"``: ``"levelled off"``, ``"still rising"`` or ``"falling"``
        by the mean change. Models without such runs are left out.
    """
    table: dict[str, dict[str, tuple]] = {}
    for model in dict.fromkeys(r.model for r in results):
        rows = []
        for r in results:
            if r.model != model or r.status != "ok" or len(r.validations) < 2:
                continue
            last = r.validations[-1]
            before = [v for v in r.validations[:-1] if v[0] <= (1 - fraction) * last[0] + 1e-9]
            if before:
                rows.append((before[-1][0], last[0], before[-1][2], last[2],
                             last[2] - before[-1][2]))
        if not rows:
            continue
        stats: dict[str, tuple] = {}
        for i, name in enumerate(("from", "to", "from_bleu", "to_bleu", "change")):
            values = [row[i] for row in rows]
            stats[name] = (float(np.mean(values)),
                           float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                           len(values))
        change = stats["change"][0]
        stats["verdict"] = ("still rising" if change > level else
                            "falling" if change < -level else "levelled off")
        table[model] = stats
    return table


def _cell(mean: float, std: float, fmt: str) -> str:
    if math.isnan(mean):
        return "–"
    return fmt.format(mean) + ("" if math.isnan(std) else " ± " + fmt.format(std))


def _signed(mean: float, std: float) -> str:
    """``+0.31 ± 0.12``: a change with its sign, the deviation without."""
    return f"{mean:+.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")


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
    precisions = dict.fromkeys(r.precision for r in results if r.precision)
    if len(precisions) == 1:
        lines.append(f"- Precision: {next(iter(precisions))}")
    elif precisions:
        lines.append("- Precision differs between runs (their BLEU is not strictly comparable):")
        lines += [f"  - {p}: " + ", ".join(f"{r.model} seed {r.seed}" for r in results
                                            if r.precision == p) for p in precisions]
    lines += ["", header, "|" + "---|" * (len(COLUMNS) + 2)]
    for model, stats in table.items():
        n = stats["val_bleu"][2]
        cells = [_cell(stats[name][0], math.nan if name == "parameters" else stats[name][1], fmt)
                 for name, _, fmt in COLUMNS]
        lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
    converged = convergence(results)
    if converged:
        lines += ["", "## Convergence (validation BLEU at the end of training)", "",
                  "Each run's last validation BLEU (greedy) against its last validation at or "
                  "before 90% of its updates (with 10 validations: over the last 10%); a mean "
                  "change within ±0.5 BLEU counts as levelled off.", "",
                  "| model | runs | from update | val BLEU then | at update | val BLEU at the end "
                  "| change | verdict |", "|---|---|---|---|---|---|---|---|"]
        for model, stats in converged.items():
            lines.append(f"| {model} | {stats['change'][2]} | "
                         f"{_cell(stats['from'][0], math.nan, '{:,.0f}')} | "
                         f"{_cell(*stats['from_bleu'][:2], '{:.2f}')} | "
                         f"{_cell(stats['to'][0], math.nan, '{:,.0f}')} | "
                         f"{_cell(*stats['to_bleu'][:2], '{:.2f}')} | "
                         f"{_signed(*stats['change'][:2])} | {stats['verdict']} |")
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
