"""Evaluate a checkpoint on a corpus split with sacreBLEU (BLEU and chrF).

    python scripts/evaluate.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt \\
        --split test_2016_flickr

Decodes the split in length-bucketed batches (greedy, or beam search with
``--beam``), detokenizes, scores against the raw references with sacreBLEU
(cased BLEU and chrF, with signatures: the headline numbers) and, beside
them, with the Multi30k papers' protocol (lowercased, Moses-normalized and
-tokenized BLEU against the official ``*.lc.norm.tok.*`` references), and
writes ``{split}.{tgt}.hyp`` and ``{split}.metrics.json`` to ``--out``
(default: ``eval/`` beside the checkpoint's folder; ``eval_<name>/`` beside
a CTranslate2 model directory ``<name>``, which ``--ckpt`` also accepts).

Choosing the checkpoint and decoding on the validation split, then testing:

    python scripts/evaluate.py --ckpt runs/multi30k_tiny/checkpoints/best.ckpt \
        runs/multi30k_tiny/checkpoints/averaged.ckpt --beam 1 5 --lenpen 0.6 1.0 \
        --select-on val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inference.options import add_engine_arguments, add_lenpen_norm_argument, engine_options, \
    require_at_least

from .common import add_device_argument, make_parser, resolve_device, run_command

SCRIPT = "evaluate.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (``--help`` lists them); a bad value exits with status 2."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--ckpt", "--model", dest="ckpt", required=True, nargs="+",
                   help="checkpoint written by scripts/train.py, or a CTranslate2 model directory "
                        "(scripts/export_ctranslate2.py); several with --select-on")
    p.add_argument("--data", default=None,
                   help="corpus directory or hub id (default: the one the model was trained on)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the test split)")
    p.add_argument("--src-lang", default=None, help="source language (default: from checkpoint)")
    p.add_argument("--tgt-lang", default=None, help="target language (default: from checkpoint)")
    p.add_argument("--max-tokens", type=int, default=8192, help="batch budget in source tokens")
    p.add_argument("--beam", type=int, nargs="+", default=None,
                   help="beam size; 1 is greedy (default: the checkpoint's beam_size); "
                        "several with --select-on")
    p.add_argument("--lenpen", type=float, nargs="+", default=None,
                   help="GNMT length-penalty exponent alpha (default: the checkpoint's); "
                        "several with --select-on")
    p.add_argument("--select-on", default=None, metavar="SPLIT",
                   help="score every --ckpt x --beam x --lenpen on SPLIT (the validation split, "
                        "never the test split), then evaluate the best one by cased BLEU on "
                        "--split")
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
    add_lenpen_norm_argument(p, several=True)
    add_device_argument(p)
    add_engine_arguments(p)
    args = p.parse_args(argv)
    args.engine_options = engine_options(p, args)
    require_at_least(p, args, beam=1, lenpen=0, max_tokens=1)
    if args.select_on and args.select_on == args.split:
        p.error(f"--select-on {args.select_on} is also the split to report (--split); choose on "
                f"the validation split and report another")
    if not args.select_on and (len(args.ckpt) > 1 or len(args.beam or []) > 1
                               or len(args.lenpen or []) > 1 or len(args.lenpen_norm or []) > 1):
        p.error("several --ckpt, --beam, --lenpen or --lenpen-norm values need --select-on "
                "SPLIT (e.g. --select-on val)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation; returns the metrics dict that is also written to JSON."""
    args = parse_args(argv)
    from evaluation.metrics import TOKENIZED_BLEU_NAME
    from evaluation.selection import evaluate_translator, select_on_split
    from inference.checkpoint import load_translator

    args.device = resolve_device(args.device)
    overrides = dict(max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                     use_cache=not args.no_cache)
    ckpt, selection = args.ckpt[0], None
    if args.select_on:
        ckpt, decoding, table = select_on_split(args.ckpt, args.beam or [None],
                                                args.lenpen or [None], args.select_on,
                                                args.device, load_options=args.engine_options,
                                                lenpen_norms=args.lenpen_norm or [None],
                                                **overrides)
        print(f"{args.select_on}: candidates (cased BLEU / papers' BLEU)")
        for row in table:
            print(f"  {row['checkpoint']}  {row['decoding']}: {row['bleu']:.2f} / "
                  f"{row['bleu_lc_norm_tok']:.2f}  ({row['decode_seconds']:.1f} s)")
        print(f"chosen on {args.select_on}: {ckpt}, {decoding.describe()}")
        selection = {"split": args.select_on, "candidates": table}
        translator = load_translator(ckpt, args.device, **args.engine_options)
    else:
        translator = load_translator(ckpt, args.device, **args.engine_options)
        decoding = translator.decoding(beam_size=(args.beam or [None])[0],
                                       alpha=(args.lenpen or [None])[0],
                                       lenpen_norm=(args.lenpen_norm or [None])[0], **overrides)
    hyps, scores = evaluate_translator(translator, decoding, args.split, args.data,
                                       args.src_lang, args.tgt_lang, args.device,
                                       args.max_tokens, args.tok_refs)
    scores["checkpoint"] = str(ckpt)
    if selection:
        scores["selected_on"] = selection
    split, tgt_lang = scores["split"], scores["tgt_lang"]

    if args.out:
        out = Path(args.out)
    elif Path(ckpt).is_dir():  # a CTranslate2 model: eval_<name>/ beside it
        out = Path(ckpt).parent / f"eval_{Path(ckpt).name}"
    else:
        out = Path(ckpt).parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    stem = split if decoding.beam_size == 1 else f"{split}.beam{decoding.beam_size}"
    hyp_path, metrics_path = out / f"{stem}.{tgt_lang}.hyp", out / f"{stem}.metrics.json"
    hyp_path.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    metrics_path.write_text(json.dumps(scores, indent=2) + "\n")
    if selection:  # what was chosen, for scripts that decode with it next (run_main.sh)
        (out / "selected.json").write_text(json.dumps(
            {"checkpoint": str(ckpt), "beam": decoding.beam_size, "lenpen": decoding.alpha,
             "lenpen_norm": decoding.lenpen_norm,
             "metrics": str(metrics_path)}, indent=2) + "\n")
    print(f"{split} {scores['src_lang']}->{tgt_lang} ({len(hyps)} sentences, "
          f"{scores['decoding']}, {scores['decode_seconds']:.1f} s on {args.device}, "
          f"{scores['engine']})")
    print(f"BLEU = {scores['bleu']:.2f}  {scores['bleu_signature']}")
    print(f"chrF = {scores['chrf']:.2f}  {scores['chrf_signature']}")
    name = TOKENIZED_BLEU_NAME
    print(f"papers' BLEU (lowercased, Moses-normalized+tokenized, tok:none) = "
          f"{scores[name]:.2f}  against {scores[name + '_references']}")
    print(scores["bleu_details"])
    print(f"wrote {hyp_path} and {metrics_path}")
    return scores


def _user_errors() -> tuple[type, ...]:
    from data.reading import CorpusError
    from inference.checkpoint import CheckpointError
    from inference.decoding import DecodingError

    return CheckpointError, CorpusError, DecodingError


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/evaluate.py`` and the installed entry point call it)."""
    run_command(SCRIPT, main, argv, _user_errors)
