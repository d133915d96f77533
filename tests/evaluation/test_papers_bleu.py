"""The papers' BLEU protocol (lowercased, Moses-normalized, Moses-tokenized
BLEU against the official ``*.lc.norm.tok.*`` files) against the official
Multi30k files themselves."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import sacrebleu

from evaluation.metrics import (moses_lc_norm_tok, official_tokenized_references,
                                 tokenized_bleu)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
RAW, TOK = SHARED / "multi30k", SHARED / "multi30k-tok"


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


@pytest.fixture(scope="module")
def test2016_de() -> tuple[list[str], list[str]]:
    if not (RAW.is_dir() and TOK.is_dir()):
        pytest.skip(f"Multi30k raw/tokenized files not found under {SHARED}")
    return _lines(RAW / "test_2016_flickr.de.gz"), _lines(TOK / "test_2016_flickr.lc.norm.tok.de.gz")


@pytest.mark.parametrize("split,lang", [("test_2016_flickr", "de"), ("test_2016_flickr", "en"),
                                        ("val", "de"), ("test_2016_flickr", "fr")])
def test_pipeline_reproduces_the_official_tokenized_references(split, lang):
    """lowercase | normalize-punctuation.perl | tokenizer.perl, line for line."""
    if not (RAW.is_dir() and TOK.is_dir()):
        pytest.skip(f"Multi30k raw/tokenized files not found under {SHARED}")
    raw, official = _lines(RAW / f"{split}.{lang}.gz"), _lines(TOK / f"{split}.lc.norm.tok.{lang}.gz")
    assert len(raw) == len(official) >= 1000
    ours = moses_lc_norm_tok(raw, lang)
    mismatches = [(i + 1, a, b) for i, (a, b) in enumerate(zip(ours, official)) if a != b]
    assert mismatches == []


def test_trailing_newline_rule_is_needed(test2016_de):
    """The quote/full-stop rule of normalize-punctuation.perl for de only fires
    with the newline the Perl script sees: val.de line 656 is the case."""
    raw = _lines(RAW / "val.de.gz")[655]
    official = _lines(TOK / "val.lc.norm.tok.de.gz")[655]
    from sacremoses import MosesPunctNormalizer, MosesTokenizer
    without = MosesTokenizer("de").tokenize(MosesPunctNormalizer("de").normalize(raw.lower()),
                                            return_str=True, escape=True)
    assert without != official
    assert moses_lc_norm_tok([raw], "de") == [official]


def _degrade(lines: list[str]) -> list[str]:
    """Hypotheses that differ from the references: every sixth word dropped,
    every fifth sentence cut in half, some words upper-cased."""
    out = []
    for i, line in enumerate(lines):
        words = [w.upper() if j % 4 == 1 else w for j, w in enumerate(line.split()) if j % 6 != 5]
        out.append(" ".join(words[: len(words) // 2] if i % 5 == 0 else words))
    return out


def test_score_against_official_file_equals_score_against_own_tokenization(test2016_de):
    raw, official = test2016_de
    hyps = _degrade(raw)
    against_file = tokenized_bleu(hyps, raw, "de", str(TOK / "test_2016_flickr.lc.norm.tok.de.gz"))
    against_own = tokenized_bleu(hyps, raw, "de")
    assert 10 < against_file["bleu_lc_norm_tok"] < 90
    assert against_file["bleu_lc_norm_tok"] == against_own["bleu_lc_norm_tok"]
    # and both equal sacreBLEU with no tokenization of the pre-tokenized texts
    expected = sacrebleu.corpus_bleu(moses_lc_norm_tok(hyps, "de"), [official], tokenize="none")
    assert against_file["bleu_lc_norm_tok"] == pytest.approx(expected.score)
    assert "tok:none" in against_file["bleu_lc_norm_tok_signature"]


def test_lowercasing_makes_case_errors_free_unlike_cased_sacrebleu(test2016_de):
    raw, _ = test2016_de
    refs = [line for line in raw if "ß" not in line][:200]  # "ß".upper() is "SS"
    shouted = [line.upper() for line in refs]
    assert tokenized_bleu(shouted, refs, "de")["bleu_lc_norm_tok"] == pytest.approx(100.0)
    assert sacrebleu.corpus_bleu(shouted, [refs]).score < 10.0


def test_official_file_lookup_and_length_mismatch(test2016_de, tmp_path):
    assert official_tokenized_references(str(RAW), "test_2016_flickr", "de") == \
        str(TOK / "test_2016_flickr.lc.norm.tok.de.gz")
    assert official_tokenized_references(str(RAW), "train", "de") is None
    assert official_tokenized_references(None, "val", "de") is None
    raw, _ = test2016_de
    with pytest.raises(ValueError, match=r"999 hypotheses but 1000 references in .*lc\.norm\.tok"):
        tokenized_bleu(raw[:999], raw[:999], "de", str(TOK / "test_2016_flickr.lc.norm.tok.de.gz"))
