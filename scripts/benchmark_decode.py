"""Decoding speed: greedy and beam search, with and without the key/value cache,
and the same model exported to CTranslate2 (float32 and int8).

    python scripts/benchmark_decode.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt
    python scripts/benchmark_decode.py --ckpt RUN.ckpt --ctranslate2 --threads 2

Decodes the test split (``test_2016_flickr`` by default) with every
combination of ``--beams`` and cached/uncached decoding in one process, and
prints sentences/second, output tokens/second, the speed-up of the cache
(cached / uncached, measured in the same run) and whether both produced
identical output, and cased sacreBLEU against the references. With
``--ctranslate2`` the checkpoint is exported to a temporary CTranslate2 model
(float32; or pass an exported directory, ``--ctranslate2 DIR``) and decoded
with every ``--compute-types`` entry on ``--threads`` CPU threads (one
translator, default ``torch.get_num_threads()``), in the same process: its
rows give the speed-up over our cached decoding of the same beam and the
share of sentences whose output equals ours. Each configuration is timed
``--repeats`` times after one warm-up batch; the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from training.benchmarking import timed  # noqa: E402
from training.checkpoint import load_translator  # noqa: E402
from training.evaluation import (corpus_scores, decode_batch, source_batches,  # noqa: E402
                                 translate_batches)
from training.options import require_at_least  # noqa: E402
from training.runtime import tune_cpu_allocator  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", default=None, help="corpus (default: the checkpoint's)")
    p.add_argument("--split", default=None, help="split (default: the checkpoint's test split)")
    p.add_argument("--limit", type=int, default=None, help="first N sentences only")
    p.add_argument("--beams", default="1,5", help="comma-separated beam sizes")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per configuration")
    p.add_argument("--max-tokens", type=int, default=8192, help="batch budget in source tokens")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--cached-only", action="store_true",
                   help="skip the (slow) uncached runs of our decoding")
    p.add_argument("--ctranslate2", nargs="?", const="export", default=None, metavar="DIR",
                   help="also decode with CTranslate2: a model directory, or (no value) a "
                        "temporary float32 export of --ckpt")
    p.add_argument("--compute-types", default="float32,int8",
                   help="CTranslate2 compute types, comma-separated")
    p.add_argument("--threads", type=int, default=None,
                   help="CTranslate2 CPU threads (default: torch.get_num_threads())")
    args = p.parse_args(argv)
    require_at_least(p, args, limit=1, repeats=1, max_tokens=1, threads=1)
    return args


def _row(decoding: str, engine: str, hyps, seconds: float, references, device_name: str) -> dict:
    tokens = sum(len(nbest[0].ids) for nbest in hyps)
    return {"decoding": decoding, "engine": engine, "sentences": len(hyps),
            "seconds": round(seconds, 3), "sentences_per_s": round(len(hyps) / seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1),
            "bleu": round(corpus_scores([n[0].text for n in hyps], references)["bleu"], 2),
            "device": device_name}


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    tune_cpu_allocator()
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

    print(f"# decoding {len(sources)} sentences of {split} on {device_name}, "
          f"checkpoint {args.ckpt}")
    print("| decoding | engine | cache | seconds | sentences/s | output tokens/s | BLEU | "
          "speed-up | identical output |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "speedup_vs_uncached" in r:
            speed = f"{r['speedup_vs_uncached']}× vs uncached"
        elif "speedup_vs_ours" in r:
            speed = f"{r['speedup_vs_ours']}× vs ours (cached)"
        else:
            speed = ""
        same = r.get("identical_output", r.get("same_as_ours", ""))
        print(f"| {r['decoding']} | {r['engine']} | {'—' if 'cache' not in r else 'yes' if r['cache'] else 'no'} | "
              f"{r['seconds']:.1f} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['bleu']:.2f} | {speed} | {same} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


def ctranslate2_rows(args, translator, sources, references, beams, ours) -> list[dict]:
    """Rows of the CTranslate2 model (exported here to a temporary directory
    unless ``--ctranslate2 DIR``) for every compute type and beam."""
    from training.ct2 import export_ctranslate2, load_ctranslate2

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


if __name__ == "__main__":
    main()
