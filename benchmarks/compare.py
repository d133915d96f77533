"""The attention comparison: runs (a ``scripts/train.py`` subprocess per
config and seed), their metrics and saved results; aggregation, significance,
plots and the report are in :mod:`benchmarks.compare_report` (re-exported here).
``scripts/compare_attention.py`` is its command line; its docstring
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
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
import yaml  # noqa: E402

from data.files import BASE_CONFIG  # noqa: E402
from evaluation.selection import evaluate_translator  # noqa: E402
from inference.checkpoint import load_translator  # noqa: E402
from inference.translation import plot_cross_attention  # noqa: E402
from training.cli import resolve_config  # noqa: E402
from training.runtime import resolve_cpu_precision  # noqa: E402

from .compare_report import (COLUMNS, CSV_FIELDS, NOT_RUN, RunResult,  # noqa: E402, F401
                             aggregate, convergence, equal_time, paired_bootstrap, plot_curves,
                             significance, write_report)
from .compare_record import (RESULT_FILE, ResultFileError, load_result,  # noqa: E402
                             record_report, record_run, restore_run, save_result)
from .names import DEFAULT_CONFIGS  # noqa: E402


__all__ = ["RunResult", "DEFAULT_CONFIGS", "run_override", "run_one", "aggregate", "convergence",
           "equal_time",
           "save_result", "load_result", "ResultFileError", "finished_run", "machine_description",
           "NOT_RUN", "read_metrics", "train", "STARTED_FILE", "PrecisionMismatch",
           "trained_precision", "comparison_precision",
           "paired_bootstrap", "significance", "write_report", "plot_curves", "run_comparison",
           "record_run", "restore_run", "record_report", "restore_records"]

REPO = Path(__file__).resolve().parents[1]
SPEED_MONITOR = "training.callbacks.SpeedMonitor"
#: Status of a run that ``--report-only`` found unfinished.
# ------------------------------------------------------------------ running
def model_name(config: Path) -> str:
    """``configs/compare_rnn.yaml`` -> ``rnn``."""
    return Path(config).stem.removeprefix("compare_")


def _format_time(seconds: float) -> str:
    """Seconds -> Lightning's ``DD:HH:MM:SS``."""
    seconds = int(round(seconds))
    days, hours = seconds // 86400, seconds // 3600 % 24
    return f"{days:02d}:{hours:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_override(resolved: dict, run_dir: Path, seed: int, max_steps: int | None = None,
                 max_minutes: float | None = None, num_evals: int = 3) -> dict:
    """The override YAML (as a dict) that turns a shipped config into one comparison run.

    Args:
        resolved: the config as ``scripts/train.py`` reads it
            (:func:`training.cli.resolve_config`: the base under it, defaults filled,
            ``derive_paths=False``).

    The run directory becomes ``run_dir`` (every checkpoint folder derives from
    it; the logger becomes a CSVLogger there), ``SpeedMonitor`` is added if the
    config's callbacks lack it, the seed and budget are set, and validation runs
    ``num_evals`` times at equal step intervals.

    Raises:
        ValueError: if neither ``max_steps`` nor the config gives a step budget.
    """
    trainer = resolved.get("trainer", {})
    steps = max_steps or trainer.get("max_steps")
    if not steps or steps < 0:
        raise ValueError("no step budget: pass --max-steps or set trainer.max_steps in the config")
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
        },
        "data": {"seed": seed},
    }
    callbacks = trainer.get("callbacks") or []
    if not any(c.get("class_path") == SPEED_MONITOR for c in callbacks):
        override["trainer"]["callbacks"] = [*copy.deepcopy(callbacks),
                                            {"class_path": SPEED_MONITOR}]
    if max_minutes:
        override["trainer"]["max_time"] = _format_time(60 * max_minutes)
    return override


#: A run's key (:func:`_run_key`) and the seconds its training processes took so far,
#: written when it starts: ``--resume`` continues a run cut off midway only if it matches.
STARTED_FILE = "started.json"


def _interrupted(run_dir: Path, key: dict) -> float | None:
    """Seconds already trained if ``run_dir`` holds a cut-off run of ``key`` with a
    ``last.ckpt`` to continue from, else None (a run that ended, failed ones
    included, has a ``result.json``: it trains again from the start)."""
    if (run_dir / RESULT_FILE).exists():
        return None
    try:
        started = json.loads((run_dir / STARTED_FILE).read_text())
    except (OSError, ValueError):
        return None
    if started.get("key") != json.loads(json.dumps(key)) or \
            not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return None
    return float(started.get("process_seconds", 0.0))


def train(config: Path, run_dir: Path, override: dict, threads: int | None = None,
          key: dict | None = None, resume: bool = False,
          precision: str | None = None) -> tuple[int, float]:
    """Train ``config`` + ``override`` as a ``scripts/train.py`` subprocess (cwd: the repository).

    ``threads`` sets ``OMP_NUM_THREADS`` of the subprocess (None: inherited).
    ``precision`` (None: the config's) is given as ``--trainer.precision``, outside
    the run's key: :func:`comparison_precision` pins it to the earlier runs'.
    With ``resume``, a run of the same ``key`` that was cut off midway goes on
    from its ``last.ckpt`` (``--ckpt_path last``: weights, optimizer, schedule,
    data position, random state); otherwise the folder starts empty.

    Returns:
        The exit code and the wall time in seconds of the run's training
        processes (those before a resume included); the output is in
        ``run_dir/train.log``.
    """
    done = _interrupted(run_dir, key) if resume and key is not None else None
    if done is None:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # stale checkpoints would become best-v1.ckpt
        run_dir.mkdir(parents=True)
        done = 0.0
    override_path = run_dir / "override.yaml"
    override_path.write_text(yaml.safe_dump(override, sort_keys=False))
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "fit",
               "--config", str(Path(config).resolve()), "--config", str(override_path)]
    if precision:
        command += ["--trainer.precision", str(precision)]
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        command += ["--ckpt_path", "last"]
    started = {"key": key, "process_seconds": done}
    (run_dir / STARTED_FILE).write_text(json.dumps(started, indent=1))
    start = time.perf_counter()
    try:
        with open(run_dir / "train.log", "a") as log:
            log.write(shlex.join(command) + "\n")
            log.flush()
            env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
            code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  env=env).returncode
    finally:  # also when interrupted (Ctrl-C): a resumed run counts this attempt's time
        seconds = done + time.perf_counter() - start
        (run_dir / STARTED_FILE).write_text(json.dumps({**started, "process_seconds": seconds},
                                                       indent=1))
    return code, seconds


class PrecisionMismatch(ValueError):
    """Earlier runs of a comparison trained in a precision this machine cannot
    train in at a usable speed (bf16 autocast without native bf16)."""


def trained_precision(run_dir: Path) -> str:
    """``trainer.precision`` as a run trained in it: from the ``config.yaml`` that
    Lightning saved for each attempt (``lightning_logs/version_N``; written after
    the CPU fallback), distinct values joined by ``+``; ``""`` when none is saved."""
    seen: dict[str, None] = {}
    versions = sorted(Path(run_dir).glob("lightning_logs/version_*/config.yaml"),
                      key=lambda p: int(p.parent.name.rpartition("_")[2] or 0))
    for path in versions:
        try:
            saved = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        value = (saved.get("trainer") or {}).get("precision")
        if value is not None:
            seen[str(value)] = None
    return "+".join(seen)


def comparison_precision(out: Path, args: argparse.Namespace, accelerator: str | None = None
                         ) -> str | None:
    """The precision the runs still to train must use so that every run of the
    comparison in ``out`` trains alike: None when the runs ``--resume`` keeps
    trained in what this machine would use anyway (or when nothing is left to
    train), else theirs.

    The runs kept are those of ``args.configs`` x ``args.seeds`` with the same
    settings (config files, seed, budget) that finished or were cut off midway;
    runs that will train again from scratch do not count. A finished run's
    precision is the one its ``result.json`` holds (a run restored from a record
    has no Lightning logs), a cut-off run's its saved ``config.yaml``'s. A comparison started
    on an AVX2-only CPU (float32: ``"32-true"``) and continued on one with
    native bf16 goes on in float32; one started in bf16 cannot go on where bf16
    is emulated (about 10x slower).

    Raises:
        PrecisionMismatch: in the second case (the message names the fix).
    """
    kept, to_train, here, accelerators = [], 0, set(), []
    for config in args.configs:
        trainer = _resolved(config).get("trainer", {})
        accelerators.append(accelerator or trainer.get("accelerator"))
        here.add(str(resolve_cpu_precision(trainer.get("precision"), accelerators[-1],
                                           warn=False)))
        for seed in args.seeds:
            run_dir, override = _run_dir_and_override(config, seed, out, args)
            key = _run_key(config, override)
            finished = load_result(run_dir, key)
            if finished is not None:
                kept.append(finished.precision or trained_precision(run_dir))
                continue
            to_train += 1
            if _interrupted(run_dir, key) is not None:
                kept.append(trained_precision(run_dir))
    earlier = {p for precision in kept for p in precision.split("+") if p}
    if not to_train or not earlier or earlier <= here:
        return None
    first = sorted(earlier)[0]
    # the CPU fallback itself says whether this machine would train in `first`
    if any(str(resolve_cpu_precision(first, a, warn=False)) != first for a in accelerators):
        raise PrecisionMismatch(
            f"the runs in {out} trained in precision {first}, which this CPU only emulates "
            f"(no AVX512-BF16 or AMX); continue the comparison on such a machine, or start a "
            f"new one with --out DIR")
    return first


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """A run's ``lightning_logs/version_N/metrics.csv`` files, merged by step.

    A resumed run writes a new version from the step it resumed at; where two
    versions log the same step (updates retrained after the last checkpoint),
    the newer one wins. Keys are optimizer updates done: Lightning's ``step``
    column holds the 0-based index of the latest update (a validation after
    100 updates is logged at step 99), so 1 is added.
    """
    files = sorted(run_dir.glob("lightning_logs/version_*/metrics.csv"),
                   key=lambda p: int(p.parent.name.split("_")[-1]))
    steps: dict[int, dict[str, float]] = {}
    for path in files:
        resumed: dict[int, dict[str, float]] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                values = {k: float(v) for k, v in row.items()
                          if k != "step" and v not in ("", None)}
                resumed.setdefault(int(row["step"]) + 1, {}).update(values)
        if resumed:  # what this version trained again replaces the older version's rows
            steps = {s: m for s, m in steps.items() if s < min(resumed)}
        steps.update(resumed)
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
        :func:`evaluation.selection.evaluate_translator`'s scores (cased BLEU,
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


def _run_key(config: Path, override: dict) -> dict:
    """What makes two runs the same: the bytes of the config file and of
    ``configs/base.yaml`` under it, and the override (seed, budget, folders)."""
    digest = hashlib.sha256(Path(config).read_bytes())
    digest.update(BASE_CONFIG.read_bytes())
    return {"config_sha256": digest.hexdigest(), "override": override}


def _run_dir_and_override(config: Path, seed: int, out: Path,
                          args: argparse.Namespace) -> tuple[Path, dict]:
    run_dir = out / f"{model_name(config)}_seed{seed}"
    return run_dir, run_override(_resolved(config), run_dir, seed, args.max_steps,
                                 args.max_minutes, args.num_evals)


_RESOLVED: dict[str, dict] = {}


def _resolved(config: Path) -> dict:
    """:func:`training.cli.resolve_config` of ``config`` (paths relative to the run
    directory, as the files give them), once per process."""
    key = str(Path(config).resolve())
    if key not in _RESOLVED:
        _RESOLVED[key] = resolve_config("--config", key, derive_paths=False)
    return _RESOLVED[key]


def finished_run(config: Path, seed: int, out: Path, args: argparse.Namespace) -> RunResult | None:
    """The saved result of this (config, seed) under ``out`` if it finished with
    the same config file, seed and budget (:func:`load_result`), else None."""
    run_dir, override = _run_dir_and_override(config, seed, out, args)
    result = load_result(run_dir, _run_key(config, override))
    if result is not None and not result.precision:  # saved before results held it
        result.precision = trained_precision(run_dir)
    return result


def run_one(config: Path, seed: int, out: Path, args: argparse.Namespace,
            machine: str = "", precision: str | None = None) -> RunResult:
    """Train, read the logs and test one (config, seed); the result is saved
    in the run folder (``result.json``, see :func:`save_result`). ``precision``:
    as :func:`train`."""
    result = RunResult(model_name(config), seed, machine=machine)
    run_dir, override = _run_dir_and_override(config, seed, out, args)
    key = _run_key(config, override)
    code, result.process_seconds = train(config, run_dir, override, args.threads, key,
                                         resume=args.resume, precision=precision)
    result.precision = trained_precision(run_dir)
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


def restore_records(out: Path, record: Path, args: argparse.Namespace) -> list[Path]:
    """Restore into ``out`` (:func:`restore_run`) every run of ``args.configs`` x
    ``args.seeds`` that ``out`` holds no finished result of but ``record`` does
    (same config files, seed and budget); returns the restored run folders."""
    restored = []
    for seed in args.seeds:
        for config in args.configs:
            run_dir, override = _run_dir_and_override(config, seed, out, args)
            key = _run_key(config, override)
            if load_result(run_dir, key) is None and \
                    restore_run(record / run_dir.name, run_dir, key,
                                _resolved(config).get("data", {}), _in_repo):
                print(f"[compare] {model_name(config)} seed {seed}: finished run restored "
                      f"from {record / run_dir.name}", flush=True)
                restored.append(run_dir)
    return restored


def _report(results: list[RunResult], out: Path, command: str, machine: str, budget: str,
            record: Path | None) -> None:
    """:func:`write_report` into ``out``, copied into ``record`` if given."""
    paths = write_report(results, out, command, machine, budget)
    if record is not None:
        record_report(paths, record)


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
    precision, checked = None, not args.resume  # checked before the first run trains
    record = getattr(args, "record", None)
    if record is not None and (args.resume or report_only):
        restore_records(out, record, args)
    for seed in args.seeds:  # seed by seed: a cut-short comparison has every model's first seeds
        for config in args.configs:
            result = finished_run(config, seed, out, args) if args.resume or report_only else None
            reused = result is not None
            if not reused and report_only:
                results.append(RunResult(model_name(config), seed, status=NOT_RUN))
                continue
            if not reused and not checked:
                precision, checked = comparison_precision(out, args), True
                if precision:
                    print(f"[compare] the runs in {out} trained in precision {precision}: "
                          f"those still to train use it too (--trainer.precision {precision})",
                          flush=True)
            if not reused:
                print(f"[compare] {model_name(config)} seed {seed}: training ({config})",
                      flush=True)
            result = result or run_one(config, seed, out, args, machine, precision)
            results.append(result)
            print(f"[compare] {result.model} seed {result.seed}: {result.status}"
                  f"{' (finished before, reused)' if reused else ''}, "
                  f"val BLEU {result.val_bleu:.2f}, test BLEU {result.test_bleu:.2f}, "
                  f"{result.train_tokens_per_sec:,.0f} tokens/s, "
                  f"{result.process_seconds:.0f} s training process, "
                  f"{time.perf_counter() - start:.0f} s so far", flush=True)
            run_dir = out / f"{result.model}_seed{result.seed}"
            if record is not None and (not reused or not (record / run_dir.name).is_dir()):
                record_run(run_dir, record)  # trained now, or finished before --record was used
            if not reused:  # after every trained run, so a stopped comparison keeps its report
                _report(results, out, command, machine, budget, record)
    _report(results, out, command, machine, budget, record)
    print(f"[compare] report: {out / 'report.md'}")
    return results
