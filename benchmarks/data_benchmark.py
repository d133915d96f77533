"""The data stage at several corpus sizes: seconds and peak RSS per stage, loader throughput.

Logic of ``scripts/benchmark_data.py``. Each size runs in its own subprocess
(:func:`measure_size`, started by :func:`run_sizes`), so each peak RSS is that
size's own. A size is either a corpus directory or a local corpus repeated K
times with numbered lines (:func:`build_repeated_corpus`: real sentences,
none identical, so nothing is deduplicated and SentencePiece sees K times the
text). Stages, from the cache's ``manifest.json`` and the clock around
``prepare_data``/``setup``: read (``datasets`` Arrow conversion of the text
files), tokenizer (SentencePiece training on a sample of at most 1 M
sentences), encode, write (the memory-mapped cache), setup (opening the cache,
reading the evaluation splits' text); then the training DataLoader's batches/s
and target tokens/s, and optionally one epoch of subword sampling.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["build_repeated_corpus", "cpu_name", "format_table", "measure_size", "run_sizes"]


def cpu_name() -> str:
    """The CPU as ``lscpu`` names it: model name, family and model numbers, cores."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        return (f"{fields.get('Model name', platform.processor())} family "
                f"{fields.get('CPU family', '?')} model {fields.get('Model', '?')}, "
                f"{os.cpu_count()} cores")
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _read(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def build_repeated_corpus(source: str | os.PathLike, out: str | os.PathLike, copies: int,
                          langs: tuple[str, str] = ("en", "de"), train_split: str = "train",
                          eval_splits: tuple[str, ...] = ("val", "test_2016_flickr")) -> int:
    """Write ``out/{train_split}.{lang}``: the source training split ``copies`` times,
    every line prefixed with its 1-based line number (the same number on both
    sides); the evaluation splits are linked unchanged. Returns the pairs written.

    Raises:
        data.corpus.CorpusError: if a split file is missing (via ``find_split_file``).
    """
    from data.corpus import find_split_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = 0
    for lang in langs:
        lines = _read(find_split_file(source, train_split, lang))
        with open(out / f"{train_split}.{lang}", "w", encoding="utf-8") as f:
            number = 0
            for _ in range(copies):
                for line in lines:
                    number += 1
                    f.write(f"{number} {line}\n")
        pairs = number
        for split in eval_splits:
            path = find_split_file(source, split, lang)
            link = out / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
    return pairs


def measure_size(corpus: str, cache_dir: str, data: dict, batches: int,
                 sample_epoch: bool) -> dict:
    """Prepare, set up and iterate one corpus in this process; the figures as a dict."""
    from data.cache import read_manifest
    from data.datamodule import TranslationDataModule, peak_rss_mb

    dm = TranslationDataModule(source=corpus, cache_dir=cache_dir, **data)
    start = time.perf_counter()
    dm.prepare_data()
    prepare_s = time.perf_counter() - start
    rss_prepare = peak_rss_mb()
    start = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - start
    manifest = read_manifest(dm.cache_path)
    result = {"pairs": manifest["splits"]["train"]["pairs"], "stages": manifest["stages"],
              "prepare_s": prepare_s, "setup_s": setup_s, "peak_rss_prepare_mb": rss_prepare,
              "peak_rss_setup_mb": peak_rss_mb()}
    loader = dm.train_dataloader()
    start, count, tgt_tokens = time.perf_counter(), 0, 0
    for batch in loader:
        tgt_tokens += int(batch["tgt_valid_len"].sum())
        count += 1
        if count == batches:
            break
    seconds = time.perf_counter() - start
    result.update(loader_batches=count, loader_s=seconds, batches_per_s=count / seconds,
                  tgt_tokens_per_s=tgt_tokens / seconds, peak_rss_loader_mb=peak_rss_mb())
    if sample_epoch:
        sampling = TranslationDataModule(source=corpus, cache_dir=cache_dir,
                                         **{**data, "spm_alpha": 0.5})
        sampling.setup("fit")
        start = time.perf_counter()
        sampled = sampling.sampled_train(0)
        result.update(sampling_epoch_s=time.perf_counter() - start,
                      sampling_pairs=len(sampled), peak_rss_sampling_mb=peak_rss_mb())
    return result


def run_sizes(source: str, copies: list[int], data: dict, batches: int, sample_epoch: bool,
              work_dir: str | None = None, keep: bool = False) -> list[dict]:
    """Each size in a fresh subprocess with a fresh cache; returns their results."""
    results = []
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="benchmark_data_") as tmp:
        for k in copies:
            corpus = Path(tmp) / f"corpus_x{k}"
            build_repeated_corpus(source, corpus, k)
            cache = Path(tmp) / f"cache_x{k}"
            spec = json.dumps({"corpus": str(corpus), "cache_dir": str(cache), "data": data,
                               "batches": batches, "sample_epoch": sample_epoch})
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.data_benchmark", spec],
                capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if proc.returncode != 0:
                raise RuntimeError(f"size x{k} failed:\n{proc.stderr[-4000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["copies"] = k
            results.append(result)
            print(format_row(result), flush=True)
            if not keep:
                for path in (corpus, cache):
                    subprocess.run(["rm", "-rf", str(path)], check=False)
    return results


HEADER = ("| pairs | read s | tokenizer s | encode s | write s | prepare_data s | setup s "
          "| prepare+setup s | µs/pair | peak RSS MiB (prepare / setup / loader) "
          "| loader batches/s | target tok/s | sampling epoch s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def format_row(r: dict) -> str:
    """One markdown row of a size's figures."""
    stages = {k: v["seconds"] for k, v in r["stages"].items()}
    total = r["prepare_s"] + r["setup_s"]
    sampling = f"{r['sampling_epoch_s']:.1f}" if "sampling_epoch_s" in r else "—"
    return (f"| {r['pairs']:,} | {stages.get('read', 0):.1f} | {stages.get('tokenizer', 0):.1f} "
            f"| {stages.get('encode', 0):.1f} | {stages.get('write', 0):.1f} "
            f"| {r['prepare_s']:.1f} | {r['setup_s']:.1f} | {total:.1f} "
            f"| {1e6 * total / r['pairs']:.1f} | {r['peak_rss_prepare_mb']:.0f} / "
            f"{r['peak_rss_setup_mb']:.0f} / {r['peak_rss_loader_mb']:.0f} "
            f"| {r['batches_per_s']:.0f} | {r['tgt_tokens_per_s']:,.0f} | {sampling} |")


def format_table(results: list[dict], command: str, data: dict) -> str:
    """The report: machine, versions, command, then one row per size."""
    import datasets
    import numpy
    import sentencepiece
    import torch

    lines = [f"# {cpu_name()}; python {platform.python_version()}, torch {torch.__version__}, "
             f"datasets {datasets.__version__}, sentencepiece {sentencepiece.__version__}, "
             f"numpy {numpy.__version__}",
             f"# {command}",
             f"# data settings: {json.dumps(data)}; each size in its own process with a fresh "
             f"cache; µs/pair = (prepare_data + setup) / training pairs",
             "", HEADER]
    lines += [format_row(r) for r in results]
    return "\n".join(lines)


if __name__ == "__main__":  # one size, in its own process (see run_sizes)
    import logging

    logging.disable(logging.WARNING)
    import datasets as _datasets

    _datasets.disable_progress_bars()
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure_size(spec["corpus"], spec["cache_dir"], spec["data"],
                                  spec["batches"], spec["sample_epoch"])))
