"""Decoding speed: greedy and beam search, with and without the key/value cache.

    python scripts/benchmark_decode.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt

Decodes the test split (``test_2016_flickr`` by default) with every
combination of ``--beams`` and cached/uncached decoding in one process, and
prints sentences/second, output tokens/second, the speed-up of the cache
(cached / uncached, measured in the same run) and whether both produced
identical output. Each configuration is timed ``--repeats`` times after one
warm-up batch; the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from training.checkpoint import load_translator  # noqa: E402
from training.evaluation import decode_batch, source_batches, translate_batches  # noqa: E402
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
    return p.parse_args(argv)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    tune_cpu_allocator()
    translator = load_translator(args.ckpt, args.device)
    sources, _, read = translator.load_split(args.split, args.data)
    split = read["split"]
    sources = sources[: args.limit]
    loader, _ = source_batches(translator.tokenizer, sources, translator.model.config.max_len,
                               args.max_tokens)
    batches = list(loader)
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"{platform.processor() or platform.machine()} CPU, "
                        f"{torch.get_num_threads()} threads")
    rows = []
    for beam in [int(b) for b in args.beams.split(",")]:
        outputs = {}
        for use_cache in (True, False):
            decoding = translator.decoding(beam_size=beam, use_cache=use_cache)
            with torch.no_grad():  # warm-up on the first batch (not timed)
                for batch in batches[:1]:
                    decode_batch(translator.model, translator.tokenizer,
                                 {k: v.to(args.device) for k, v in batch.items()}, decoding)
            times = []
            for _ in range(args.repeats):
                _sync(args.device)
                start = time.perf_counter()
                hyps = translate_batches(translator.model, translator.tokenizer, batches,
                                         len(sources), args.device, decoding)
                _sync(args.device)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            tokens = sum(len(nbest[0].ids) for nbest in hyps)
            outputs[use_cache] = [nbest[0].ids for nbest in hyps]
            rows.append({"decoding": "greedy" if beam == 1 else f"beam {beam}",
                         "cache": use_cache, "sentences": len(sources),
                         "seconds": round(seconds, 3),
                         "sentences_per_s": round(len(sources) / seconds, 1),
                         "tokens_per_s": round(tokens / seconds, 1), "device": device_name})
        cached, uncached = rows[-2], rows[-1]
        cached["speedup_vs_uncached"] = round(uncached["seconds"] / cached["seconds"], 2)
        cached["identical_output"] = outputs[True] == outputs[False]

    print(f"# decoding {len(sources)} sentences of {split} on {device_name}, "
          f"checkpoint {args.ckpt}")
    print("| decoding | cache | seconds | sentences/s | output tokens/s | cached/uncached speed | identical output |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['decoding']} | {'yes' if r['cache'] else 'no'} | {r['seconds']:.1f} | "
              f"{r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{str(r.get('speedup_vs_uncached', '')) + ('×' if 'speedup_vs_uncached' in r else '')} | "
              f"{r.get('identical_output', '')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
