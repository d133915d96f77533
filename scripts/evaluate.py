"""Evaluate a checkpoint on a corpus split with sacreBLEU (BLEU and chrF).

    python scripts/evaluate.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt \\
        --split test_2016_flickr

Decodes the split in length-bucketed batches (greedy), detokenizes, scores
against the raw references, prints the scores with their sacreBLEU
signatures, and writes ``{split}.{tgt}.hyp`` and ``{split}.metrics.json``
to ``--out`` (default: ``eval/`` beside the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from data.corpus import load_parallel_corpus  # noqa: E402
from training.checkpoint import load_translator  # noqa: E402
from training.evaluation import corpus_scores, translate  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by scripts/train.py")
    p.add_argument("--data", default=None,
                   help="corpus directory or hub id (default: the one the model was trained on)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the test split)")
    p.add_argument("--src-lang", default=None, help="source language (default: from checkpoint)")
    p.add_argument("--tgt-lang", default=None, help="target language (default: from checkpoint)")
    p.add_argument("--max-tokens", type=int, default=8192, help="batch budget in source tokens")
    p.add_argument("--max-len-a", type=float, default=None, help="output length limit a*src+b: a")
    p.add_argument("--max-len-b", type=int, default=None, help="output length limit a*src+b: b")
    p.add_argument("--out", default=None, help="output folder (default: eval/ beside --ckpt)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation; returns the metrics dict that is also written to JSON."""
    args = parse_args(argv)
    translator = load_translator(args.ckpt, args.device)
    data = translator.data_hparams
    source = args.data or data.get("source", "../shared/data/multi30k")
    src_lang = args.src_lang or data.get("src_lang", "en")
    tgt_lang = args.tgt_lang or data.get("tgt_lang", "de")
    split = args.split or data.get("test_split", "test_2016_flickr")
    cache_dir = os.path.join(data.get("cache_dir", ".cache"), "datasets")
    corpus = load_parallel_corpus(source, src_lang, tgt_lang, [split], cache_dir=cache_dir)[split]
    sources, references = list(corpus["src"]), list(corpus["tgt"])

    start = time.perf_counter()
    hyps = translate(translator.model, translator.tokenizer, sources,
                     translator.model.config.max_len, args.device, args.max_tokens,
                     args.max_len_a if args.max_len_a is not None else translator.hparams["max_len_a"],
                     args.max_len_b if args.max_len_b is not None else translator.hparams["max_len_b"])
    seconds = time.perf_counter() - start
    scores = corpus_scores(hyps, references)
    scores.update({"split": split, "src_lang": src_lang, "tgt_lang": tgt_lang,
                   "checkpoint": str(args.ckpt), "decoding": "greedy",
                   "decode_seconds": round(seconds, 2), "device": str(args.device)})

    out = Path(args.out) if args.out else Path(args.ckpt).parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{split}.{tgt_lang}.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (out / f"{split}.metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(f"{split} {src_lang}->{tgt_lang} ({len(hyps)} sentences, greedy, "
          f"{seconds:.1f} s on {args.device})")
    print(f"BLEU = {scores['bleu']:.2f}  {scores['bleu_signature']}")
    print(f"chrF = {scores['chrf']:.2f}  {scores['chrf_signature']}")
    print(scores["bleu_details"])
    print(f"wrote {out / f'{split}.{tgt_lang}.hyp'} and {out / f'{split}.metrics.json'}")
    return scores


if __name__ == "__main__":
    main()
