"""Stage 6: score with sacreBLEU (cased BLEU, chrF) and the Multi30k papers' BLEU.

The decoding drivers that produce the hypotheses are in :mod:`inference.decoding`.
"""

from __future__ import annotations

import os

import sacrebleu
from sacremoses import MosesPunctNormalizer, MosesTokenizer

from data.corpus import read_lines
from data.reading import column

__all__ = ["corpus_scores", "moses_lc_norm_tok", "tokenized_bleu", "official_tokenized_references",
           "TOKENIZED_BLEU_NAME"]

#: How the second, literature-comparable score is named in metrics and reports.
TOKENIZED_BLEU_NAME = "bleu_lc_norm_tok"


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (cased, 13a) and chrF of detokenized hypotheses against raw references.

    Returns:
        ``{"bleu", "chrf", "bleu_signature", "chrf_signature", "num_sentences",
        "bleu_details"}``; scores in percent.

    Raises:
        ValueError: if the two lists differ in length.

    Source: Post 2018, "A Call for Clarity in Reporting BLEU Scores" (sacreBLEU).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {"bleu": bleu_score.score, "chrf": chrf_score.score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "bleu_details": str(bleu_score), "num_sentences": len(hypotheses)}


def moses_lc_norm_tok(lines: list[str], lang: str) -> list[str]:
    """The Multi30k papers' preprocessing of a text: lowercase, Moses
    punctuation normalization, Moses tokenization with Moses' default
    escaping (``"`` → ``&quot;``, ``'`` → ``&apos;`` ...).

    Equivalent to ``lowercase.perl | normalize-punctuation.perl -l LANG |
    tokenizer.perl -l LANG``, which made the official
    ``*.lc.norm.tok.*`` files of Multi30k: the Perl scripts see each line
    with its newline, and one of ``normalize-punctuation.perl``'s rules for
    de/fr/es (moving a full stop after a closing quote, ``."`` + newline →
    ``".``) needs it, so each line is normalized with a trailing newline too.

    Args:
        lines: N raw (detokenized, cased) sentences.
        lang: ISO 639-1 code of their language (``de``, ``en``, ``fr``, ``cs`` ...).

    Returns:
        N tokenized, lowercased lines (tokens separated by single spaces).

    Source: Moses ``scripts/tokenizer/*.perl`` (Koehn et al. 2007), as ported
    by ``sacremoses``; Elliott et al. 2016 (Multi30k's tokenized files).
    """
    normalizer, tokenizer = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [tokenizer.tokenize(normalizer.normalize(line.lower() + "\n"), return_str=True,
                               escape=True) for line in lines]


def official_tokenized_references(source: str | None, split: str, lang: str) -> str | None:
    """Path of the official ``{split}.lc.norm.tok.{lang}[.gz]`` reference file
    that belongs to a corpus directory, or None if there is none.

    Looked for in ``{source}-tok/`` (``../shared/data/multi30k`` →
    ``../shared/data/multi30k-tok/``) and in ``{source}/tok/`` (the layout of
    the multi30k/dataset repository).
    """
    if not source:
        return None
    base = source.rstrip("/")
    for folder in (base + "-tok", os.path.join(base, "tok")):
        for name in (f"{split}.lc.norm.tok.{lang}.gz", f"{split}.lc.norm.tok.{lang}"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def tokenized_bleu(hypotheses: list[str], references: list[str], lang: str,
                   reference_file: str | None = None) -> dict:
    """BLEU as Multi30k papers report it: hypotheses and references
    lowercased, punctuation-normalized and Moses-tokenized
    (:func:`moses_lc_norm_tok`), then scored by sacreBLEU with
    ``tokenize="none"`` (multi-bleu style: no further tokenization).

    Not comparable with the cased, detokenized sacreBLEU of
    :func:`corpus_scores` (which stays the headline number); comparable with
    papers that score against the official ``*.lc.norm.tok.*`` files, e.g.
    Wu et al. 2021.

    Args:
        hypotheses: N detokenized system outputs.
        references: N raw references (used when ``reference_file`` is None).
        lang: target language code.
        reference_file: an already tokenized reference file (one line per
            sentence), e.g. the official ``test_2016_flickr.lc.norm.tok.de.gz``.

    Returns:
        ``{"bleu_lc_norm_tok", "bleu_lc_norm_tok_signature",
        "bleu_lc_norm_tok_details", "bleu_lc_norm_tok_references"}``; the
        score in percent; the last names the reference file, or says the raw
        references were tokenized here.

    Raises:
        ValueError: if the hypotheses and references differ in number (the
            message names the reference file).
        data.corpus.CorpusError: if ``reference_file`` is not UTF-8.

    Source: Papineni et al. 2002 (BLEU); Post 2018 (sacreBLEU); Wu et al. 2021
    and the Multi30k task-1 evaluation protocol.
    """
    if reference_file is not None:
        refs = column(read_lines(reference_file), "text")
        where = reference_file
    else:
        refs = moses_lc_norm_tok(references, lang)
        where = "raw references, lowercased+normalized+tokenized with sacremoses"
    if len(refs) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(refs)} references in {where}")
    bleu = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    score = bleu.corpus_score(moses_lc_norm_tok(hypotheses, lang), [refs])
    name = TOKENIZED_BLEU_NAME
    return {name: score.score,
            f"{name}_signature": f"{bleu.get_signature()}|pre:lc+moses-norm+moses-tok",
            f"{name}_details": str(score), f"{name}_references": where}
