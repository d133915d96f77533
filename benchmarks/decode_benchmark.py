"""The decoding benchmark: our greedy and beam search with and without the
key/value cache, and the CTranslate2 export of the same model, on one split,
in one process (seconds, sentences/s, tokens/s, BLEU, speed-ups, identical
outputs). ``scripts/benchmark_decode.py`` is its command line.
"""

from __future__ import annotations

import os
import platform
import tempfile

import torch

from evaluation.metrics import corpus_scores
from inference.checkpoint import load_translator
from inference.decoding import decode_batch, source_batches, translate_batches
from inference.ct2 import export_ctranslate2, load_ctranslate2

from .timing import timed

__all__ = ["run_decode_benchmark", "format_rows"]


def _row(decoding: str, engine: str, hyps, seconds: float, references, device_name: str) -> dict:
    tokens = sum(len(nbest[0].ids) for nbest in hyps)
    return {"decoding": decoding, "engine": engine, "sentences": len(hyps),
            "seconds": round(seconds, 3), "sentences_per_s": round(len(hyps) / seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1),
            "bleu": round(corpus_scores([n[0].text for n in hyps], references)["bleu"], 2),
            "device": device_name}


def run_decode_benchmark(args) -> tuple[list[dict], str]:
    """Decode the split as ``args`` (the options of ``scripts/benchmark_decode.py``)
    say: ours greedy/beam with and without the cache, then CTranslate2 if
    asked. Returns the rows and a one-line description of the run."""
    translator = load_translator(args.ckpt, args.device, engine="pytorch")
    sources, references, read = translator.load_split(args.split, args.data)
    split = read["split"]
    sources, references = sources[: args.limit], references[: args.limit]
    loader, _ = source_batches(translator.tokenizer, sources, translator.model.config.max_len,
                               args.max_tokens)
    batches = list(loader)
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"{platform.processor() or platform.machine()} CPU, "
                        f"{torch.get_num_threads()} threads")
    beams = [int(b) for b in args.beams.split(",")]
    rows, ours = [], {}
    for beam in beams:
        outputs = {}
        for use_cache in (True,) if args.cached_only else (True, False):
            decoding = translator.decoding(beam_size=beam, use_cache=use_cache)
            with torch.no_grad():  # warm-up on the first batch (not timed)
                for batch in batches[:1]:
                    decode_batch(translator.model, translator.tokenizer,
                                 {k: v.to(args.device) for k, v in batch.items()}, decoding)
            seconds, hyps = timed(lambda: translate_batches(
                translator.model, translator.tokenizer, batches, len(sources), args.device,
                decoding), args.repeats, args.device)
            outputs[use_cache] = [nbest[0].ids for nbest in hyps]
            row = _row(decoding.describe(), "ours", hyps, seconds, references, device_name)
            rows.append({**row, "cache": use_cache})
        if not args.cached_only:
            cached, uncached = rows[-2], rows[-1]
            cached["speedup_vs_uncached"] = round(uncached["seconds"] / cached["seconds"], 2)
            cached["identical_output"] = outputs[True] == outputs[False]
        ours[beam] = (rows[-1] if args.cached_only else rows[-2], outputs[True])
    if args.ctranslate2:
        rows += ctranslate2_rows(args, translator, sources, references, beams, ours)
    return rows, (f"decoding {len(sources)} sentences of {split} on {device_name}, "
                  f"checkpoint {args.ckpt}")


def ctranslate2_rows(args, translator, sources, references, beams, ours) -> list[dict]:
    """Rows of the CTranslate2 model (exported here to a temporary directory
    unless ``--ctranslate2 DIR``) for every compute type and beam."""
    ids = translator.tokenizer.encode(sources)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.ctranslate2
        if model_dir == "export":
            model_dir = export_ctranslate2(translator, os.path.join(tmp, "ct2"), "float32",
                                           where=args.ckpt)
        threads = args.threads or torch.get_num_threads()
        for compute_type in args.compute_types.split(","):
            ct2 = load_ctranslate2(model_dir, args.device, compute_type, threads)
            engine = f"CTranslate2 {ct2.engine.compute_type}, {threads} threads"
            for beam in beams:
                decoding = translator.decoding(beam_size=beam)
                ct2.translate_ids(ids[:16], decoding, args.device, args.max_tokens)  # warm-up
                seconds, hyps = timed(lambda: ct2.translate_ids(
                    ids, decoding, args.device, args.max_tokens), args.repeats, args.device)
                row = _row(decoding.describe(), engine, hyps, seconds, references,
                           ours[beam][0]["device"])
                reference_row, reference_ids = ours[beam]
                same = sum(n[0].ids == r for n, r in zip(hyps, reference_ids)) / len(hyps)
                row.update(speedup_vs_ours=round(reference_row["seconds"] / seconds, 2),
                           same_as_ours=f"{100 * same:.1f}% same as ours")
                rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    """The rows of :func:`run_decode_benchmark` as a markdown table."""
    lines = ["| decoding | engine | cache | seconds | sentences/s | output tokens/s | BLEU | "
             "speed-up | identical output |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "speedup_vs_uncached" in r:
            speed = f"{r['speedup_vs_uncached']}× vs uncached"
        elif "speedup_vs_ours" in r:
            speed = f"{r['speedup_vs_ours']}× vs ours (cached)"
        else:
            speed = ""
        same = r.get("identical_output", r.get("same_as_ours", ""))
        cache = "—" if "cache" not in r else "yes" if r["cache"] else "no"
        lines.append(f"| {r['decoding']} | {r['engine']} | {cache} | {r['seconds']:.1f} | "
                     f"{r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['bleu']:.2f} | "
                     f"{speed} | {same} |")
    return lines
