"""Evaluate a checkpoint on a split with both BLEU protocols, and choose the
checkpoint and decoding that score best on the validation split.

Shared by ``scripts/evaluate.py`` and ``scripts/run_main.sh`` (through it).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict
from typing import Callable, Sequence

import torch

from data.corpus import CorpusError
from inference.checkpoint import Translator, load_translator
from inference.decoding import DecodingConfig

from .metrics import corpus_scores, official_tokenized_references, tokenized_bleu

__all__ = ["evaluate_translator", "select_on_split"]


def evaluate_translator(translator: Translator, decoding: DecodingConfig, split: str | None = None,
                        data: str | None = None, src_lang: str | None = None,
                        tgt_lang: str | None = None, device: str | torch.device = "cpu",
                        max_tokens: int = 8192, tok_refs: str | None = None,
                        resolve: Callable[[str], str] = str,
                        loaded: tuple[list[str], list[str], dict] | None = None
                        ) -> tuple[list[str], dict]:
    """Translate a split of the checkpoint's corpus and score it.

    Scores: cased detokenized sacreBLEU and chrF with signatures (the
    headline numbers, :func:`evaluation.metrics.corpus_scores`) and the
    papers' lowercased/normalized/tokenized BLEU
    (:func:`evaluation.metrics.tokenized_bleu`) against ``tok_refs``: a
    tokenized reference file, ``"raw"`` to tokenize the raw references here,
    or None to use the official ``{split}.lc.norm.tok.{lang}.gz`` beside the
    corpus when there is one. ``resolve`` maps the checkpoint's saved
    relative corpus paths (see :meth:`Translator.load_split`); ``loaded`` is
    what that method returned for this split, where the caller has it
    already (several decodings of one split).

    Returns:
        ``(hypotheses, scores)``; ``scores`` also names the split, languages,
        decoding, decode seconds and device.

    Raises:
        data.corpus.CorpusError: for a missing corpus split, or a tokenized
            reference file whose line count differs from the split's.
    """
    sources, references, read = loaded or translator.load_split(split, data, src_lang, tgt_lang,
                                                                resolve)
    split, tgt = read["split"], read["tgt_lang"]
    start = time.perf_counter()
    hyps = [nbest[0].text for nbest in translator.translate_ids(
        translator.tokenizer.encode(sources), decoding, device, max_tokens)]
    seconds = time.perf_counter() - start
    scores = corpus_scores(hyps, references)
    saved = translator.data_hparams.get("source")
    corpus = data or (resolve(saved) if saved else None)
    reference_file = None if tok_refs == "raw" else (
        tok_refs or official_tokenized_references(corpus, split, tgt))
    try:
        scores.update(tokenized_bleu(hyps, references, tgt, reference_file))
    except ValueError as err:
        raise CorpusError(f"--tok-refs {reference_file}: {err}; pass the tokenized file of "
                          f"split {split!r} or --tok-refs raw") from err
    scores.update({"split": split, "src_lang": read["src_lang"], "tgt_lang": tgt,
                   "decoding": decoding.describe(), "decoding_config": asdict(decoding),
                   "decode_seconds": round(seconds, 2), "device": str(device),
                   "engine": translator.engine_name})
    return hyps, scores


def select_on_split(checkpoints: Sequence[str], beams: Sequence[int | None],
                    lenpens: Sequence[float | None], split: str = "val",
                    device: str | torch.device = "cpu", metric: str = "bleu",
                    load_options: dict | None = None,
                    lenpen_norms: Sequence[str | None] = (None,), **decoding_overrides
                    ) -> tuple[str, DecodingConfig, list[dict]]:
    """Every checkpoint × beam × length penalty × length normalization scored on
    ``split``; the best by ``metric`` (cased sacreBLEU by default) wins, ties to
    the earliest.

    Greedy decoding (beam 1) ignores the length penalty, so it is scored once
    per checkpoint. Choose on the validation split only: the test split is
    for reporting.

    Args:
        checkpoints: checkpoint paths (e.g. ``best.ckpt`` and an averaged one).
        beams, lenpens: candidate beam sizes and length-penalty exponents alpha
            (None: the checkpoint's own setting).
        load_options: keyword arguments of
            :func:`inference.checkpoint.load_translator` (engine, threads ...).
        lenpen_norms: candidate length normalizations, ``"gnmt"`` or
            ``"fairseq"`` (:data:`model.decoding.LENPEN_NORMS`; None: the default).
        decoding_overrides: other :class:`DecodingConfig` fields for all.

    Returns:
        ``(checkpoint, decoding, table)``: the winner and one row per
        candidate (``checkpoint``, ``beam``, ``lenpen``, ``lenpen_norm``, ``decoding``,
        ``bleu``, ``chrf``, ``bleu_lc_norm_tok``, ``decode_seconds``).

    Raises:
        inference.checkpoint.CheckpointError: for an unreadable checkpoint.
        ValueError: if no candidate is given.
    """
    if not checkpoints or not beams:
        raise ValueError("select_on_split needs at least one checkpoint and one beam size")
    table, best = [], None
    for path in checkpoints:
        translator = load_translator(path, device, **(load_options or {}))
        loaded = translator.load_split(split)  # read once, decoded once per candidate
        seen = set()
        for beam, lenpen, norm in itertools.product(beams, lenpens or [None],
                                                    lenpen_norms or [None]):
            overrides = {**decoding_overrides, **({"lenpen_norm": norm} if norm else {})}
            decoding = translator.decoding(beam_size=beam, alpha=lenpen, **overrides)
            beam_search = decoding.beam_size > 1  # greedy ignores alpha and its normalization
            key = (decoding.beam_size, decoding.alpha if beam_search else None,
                   decoding.lenpen_norm if beam_search else None)
            if key in seen:
                continue
            seen.add(key)
            _, scores = evaluate_translator(translator, decoding, split, device=device,
                                            loaded=loaded)
            row = {"checkpoint": str(path), "beam": decoding.beam_size, "lenpen": key[1],
                   "lenpen_norm": key[2],
                   "decoding": decoding.describe(), "bleu": scores["bleu"], "chrf": scores["chrf"],
                   "bleu_lc_norm_tok": scores["bleu_lc_norm_tok"],
                   "decode_seconds": scores["decode_seconds"]}
            table.append(row)
            if best is None or row[metric] > best[0][metric]:
                best = (row, str(path), decoding)
    return best[1], best[2], table
