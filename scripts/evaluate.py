"""Evaluate a checkpoint on a corpus split with sacreBLEU (BLEU and chrF).

    python scripts/evaluate.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt \\
        --split test_2016_flickr

Decodes the split in length-bucketed batches (greedy, or beam search with
``--beam``), detokenizes, scores
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
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from data.corpus import CorpusError  # noqa: E402
from training.checkpoint import CheckpointError, load_translator  # noqa: E402
from training.evaluation import (TOKENIZED_BLEU_NAME, corpus_scores,  # noqa: E402
                                 official_tokenized_references, tokenized_bleu, translate)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by scripts/train.py")
    p.add_argument("--data", default=None,
                   help="corpus directory or hub id (default: the one the model was trained on)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the test split)")
    p.add_argument("--src-lang", default=None, help="source language (default: from checkpoint)")
    p.add_argument("--tgt-lang", default=None, help="target language (default: from checkpoint)")
    p.add_argument("--max-tokens", type=int, default=8192, help="batch budget in source tokens")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size; 1 is greedy (default: the checkpoint's beam_size)")
    p.add_argument("--lenpen", type=float, default=None,
                   help="length-penalty exponent alpha (default: the checkpoint's)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole prefix every step (slow; for comparison)")
    p.add_argument("--max-len-a", type=float, default=None, help="output length limit a*src+b: a")
    p.add_argument("--max-len-b", type=int, default=None, help="output length limit a*src+b: b")
    p.add_argument("--tok-refs", default=None,
                   help="tokenized references for the papers' BLEU (lowercased, Moses-normalized "
                        "and -tokenized); default: the official {split}.lc.norm.tok.{tgt}.gz in "
                        "<corpus>-tok/ if it exists, else the raw references tokenized here; "
                        "'raw' forces the latter")
    p.add_argument("--out", default=None, help="output folder (default: eval/ beside --ckpt)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation; returns the metrics dict that is also written to JSON."""
    args = parse_args(argv)
    translator = load_translator(args.ckpt, args.device)
    sources, references, read = translator.load_split(args.split, args.data, args.src_lang,
                                                      args.tgt_lang)
    split, src_lang, tgt_lang = read["split"], read["src_lang"], read["tgt_lang"]

    decoding = translator.decoding(beam_size=args.beam, alpha=args.lenpen,
                                   max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                                   use_cache=not args.no_cache)
    start = time.perf_counter()
    hyps = translate(translator.model, translator.tokenizer, sources,
                     translator.model.config.max_len, args.device, args.max_tokens, decoding)
    seconds = time.perf_counter() - start
    scores = corpus_scores(hyps, references)
    corpus = args.data or translator.data_hparams.get("source")
    tok_refs = None if args.tok_refs == "raw" else (
        args.tok_refs or official_tokenized_references(corpus, split, tgt_lang))
    try:
        scores.update(tokenized_bleu(hyps, references, tgt_lang, tok_refs))
    except ValueError as err:
        raise CorpusError(f"--tok-refs {tok_refs}: {err}; pass the tokenized file of split "
                          f"{split!r} or --tok-refs raw") from err
    method = "greedy" if decoding.beam_size == 1 else f"beam {decoding.beam_size}"
    scores.update({"split": split, "src_lang": src_lang, "tgt_lang": tgt_lang,
                   "checkpoint": str(args.ckpt), "decoding": method,
                   "decoding_config": asdict(decoding),
                   "decode_seconds": round(seconds, 2), "device": str(args.device)})

    out = Path(args.out) if args.out else Path(args.ckpt).parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    stem = split if decoding.beam_size == 1 else f"{split}.beam{decoding.beam_size}"
    hyp_path, metrics_path = out / f"{stem}.{tgt_lang}.hyp", out / f"{stem}.metrics.json"
    hyp_path.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    metrics_path.write_text(json.dumps(scores, indent=2) + "\n")
    print(f"{split} {src_lang}->{tgt_lang} ({len(hyps)} sentences, {method}, "
          f"{seconds:.1f} s on {args.device})")
    print(f"BLEU = {scores['bleu']:.2f}  {scores['bleu_signature']}")
    print(f"chrF = {scores['chrf']:.2f}  {scores['chrf_signature']}")
    name = TOKENIZED_BLEU_NAME
    print(f"papers' BLEU (lowercased, Moses-normalized+tokenized, tok:none) = "
          f"{scores[name]:.2f}  against {scores[name + '_references']}")
    print(scores["bleu_details"])
    print(f"wrote {hyp_path} and {metrics_path}")
    return scores


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, CorpusError) as err:
        # A wrong file is the user's to fix: say what is wrong, without a traceback.
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        sys.exit(2)
