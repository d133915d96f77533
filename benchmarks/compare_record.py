"""A comparison run's saved result (``result.json``, which ``--resume`` reads
back) and its record: the part of a finished run worth keeping in git
(``compare_attention.py --record DIR``), from which a later machine restores
the run without its checkpoints (:mod:`benchmarks.compare` runs the comparison).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable

from data.files import read_json
from inference.translator import load_corpus_split

from .compare_report import RunResult

__all__ = ["RESULT_FILE", "ResultFileError", "save_result", "load_result", "RECORD_FILES",
           "record_run", "restore_run", "record_report"]

RESULT_FILE = "result.json"


class ResultFileError(ValueError):
    """A finished run's ``result.json`` that cannot be read; the message says what to do."""


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


#: The files of a run's record besides ``result.json``: what the report needs of a
#: finished run that its checkpoints, logs and the corpus's references are not.
RECORD_FILES = ("test_hypotheses", "attention_plot")


def _portable_key(key: object) -> object:
    """A run key with its run folder (``trainer.default_root_dir``, which the
    override repeats in the logger's ``save_dir``) replaced by ``<run>``, so a
    record made in another clone or ``--out`` matches."""
    text = json.dumps(key)
    try:
        run_dir = key["override"]["trainer"]["default_root_dir"]
    except (KeyError, TypeError):
        return json.loads(text)
    return json.loads(text.replace(json.dumps(run_dir)[1:-1], "<run>"))


def record_run(run_dir: Path, record: Path) -> Path | None:
    """Copy a finished run's ``result.json``, test hypotheses and attention
    heatmap into ``record/<run folder name>/`` (a folder meant for git, such
    as ``docs/compare``), with the file paths in the result made relative.
    Checkpoints, logs and the references (corpus text, never committed) stay
    out: :func:`restore_run` rebuilds the references from the corpus.

    Returns:
        The record's folder, or None when the run has no ok result to keep.

    Raises:
        ResultFileError: if the run's ``result.json`` is damaged.
    """
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    saved = read_json(path, ResultFileError, f"delete {run_dir} to train that run again")
    result = saved.get("result", {}) if isinstance(saved, dict) else {}
    if result.get("status") != "ok":
        return None
    target = record / run_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for name in (*RECORD_FILES, "test_references"):
        if result.get(name):
            if name != "test_references" and Path(result[name]).is_file():
                shutil.copyfile(result[name], target / Path(result[name]).name)
            result[name] = Path(result[name]).name
    tmp = target / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps({"key": saved["key"], "result": result}, indent=1))
    os.replace(tmp, target / RESULT_FILE)
    return target


def restore_run(record_dir: Path, run_dir: Path, key: dict, data: dict,
                resolve: Callable[[str], str] = str) -> bool:
    """Make ``run_dir`` a finished run again from its record (:func:`record_run`)
    if the record was made with the same config files, seed and budget as
    ``key`` (its run folder may differ): the record's files are copied in, the
    test references are read from the corpus that ``data`` (the run config's
    data section; ``resolve`` maps its relative paths) describes, and
    ``result.json`` is written with this run's paths and key. Whatever
    ``run_dir`` held (an interrupted run) is replaced.

    Returns:
        True if restored; False if the record is missing, failed, or of other settings.

    Raises:
        ResultFileError: if the record's ``result.json`` is damaged.
        data.corpus.CorpusError: if the corpus of the references is missing.
    """
    path = record_dir / RESULT_FILE
    if not path.is_file():
        return False
    saved = read_json(path, ResultFileError,
                      f"restore it from git (git checkout {path}) or delete {record_dir}")
    if not isinstance(saved, dict) or _portable_key(saved.get("key")) != _portable_key(
            json.loads(json.dumps(key))) or saved.get("result", {}).get("status") != "ok":
        return False
    result = dict(saved["result"])
    if any(result.get(name) and not (record_dir / result[name]).is_file()
           for name in RECORD_FILES):
        return False
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    for name in RECORD_FILES:
        if result.get(name):
            shutil.copyfile(record_dir / result[name], run_dir / result[name])
            result[name] = str(run_dir / result[name])
    if result.get("test_references"):
        _, references, _ = load_corpus_split(data, resolve=resolve)
        (run_dir / result["test_references"]).write_text("\n".join(references) + "\n",
                                                          encoding="utf-8")
        result["test_references"] = str(run_dir / result["test_references"])
    tmp = run_dir / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps({"key": key, "result": result}, indent=1))
    os.replace(tmp, run_dir / RESULT_FILE)
    return True


def record_report(paths: dict[str, Path], record: Path) -> None:
    """Copy the report files :func:`write_report` wrote (``paths``) into ``record``."""
    record.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        shutil.copyfile(path, record / Path(path).name)
