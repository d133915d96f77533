"""Bad configuration is rejected before training starts, through the real CLI.

``scripts/train.py fit --config configs/multi30k_cpu.yaml`` runs in a subprocess,
as a user runs it, on a 24-pair corpus written here, with one bad override at a
time. The reference for "nothing trained" is the same command without the bad
override: it trains one epoch and writes ``last.ckpt``; each bad one must exit
with an error on stderr that names the config keys and their values, and leave
no checkpoint. For ``data.vocab_size`` the reference for the largest size the
message offers is SentencePiece itself: it trains that size and rejects one more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "multi30k_cpu.yaml"
GOOD_VOCAB = 40  # fits the tiny corpus below (it supports 33 to 44 pieces)

NOUNS = [("cat", "Katze"), ("dog", "Hund"), ("bird", "Vogel"), ("horse", "Pferd")]
VERBS = [("sleeps", "schläft"), ("runs", "rennt"), ("eats", "frisst")]
PLACES = [("in the park", "im Park"), ("at home", "zu Hause")]
PAIRS = [(f"The {n} {v} {p}.", f"Der {m} {w} {q}.")
         for n, m in NOUNS for v, w in VERBS for p, q in PLACES]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """The multi30k_cpu.yaml splits (train, val, test_2016_flickr) of 24/6/6 pairs."""
    out = tmp_path_factory.mktemp("tiny_corpus")
    for split, pairs in (("train", PAIRS), ("val", PAIRS[::4]), ("test_2016_flickr", PAIRS[1::4])):
        for side, lang in enumerate(("en", "de")):
            (out / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in pairs),
                                                 encoding="utf-8")
    return out


def run_train(corpus: Path, workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``train.py fit`` with the CPU recipe on ``corpus``, one epoch, run in ``workdir``.

    The recipe's relative outputs (``runs/multi30k_cpu/...`` logs and
    checkpoints, the ``.cache`` folder) land in ``workdir``.
    """
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "fit",
               "--config", str(CPU_CONFIG),
               "--data.source", str(corpus), "--data.vocab_size", str(GOOD_VOCAB),
               "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
               "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def checkpoints(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.rglob("*.ckpt"))


@pytest.mark.slow
def test_reference_run_trains_and_checkpoints(tiny_corpus, tmp_path):
    """The command of the tests below, without a bad override, trains and writes checkpoints."""
    result = run_train(tiny_corpus, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "last.ckpt" in checkpoints(tmp_path)


@pytest.mark.parametrize("overrides,expected", [
    (["--model.config.num_hiddens", "256", "--model.config.num_heads", "3"],
     "model.config.num_hiddens=256 is not divisible by model.config.num_heads=3"),
    (["--model.config.attention", "foo"],
     "model.config.attention='foo' is unknown; set it to one of 'dot', 'additive'"),
], ids=["num_heads", "attention"])
@pytest.mark.slow
def test_bad_model_config_fails_before_training(tiny_corpus, tmp_path, overrides, expected):
    result = run_train(tiny_corpus, tmp_path, *overrides)
    assert result.returncode == 2
    # One line saying what to change, not jsonargparse's wrapped traceback.
    assert f"train.py: error: {expected}" in result.stderr, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    assert checkpoints(tmp_path) == []
    assert not (tmp_path / ".cache").exists()  # rejected before the data was even prepared


@pytest.mark.slow
def test_vocab_size_too_large_fails_before_training(tiny_corpus, tmp_path):
    result = run_train(tiny_corpus, tmp_path, "--data.vocab_size", "8000")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-4000:]
    match = re.search(r"train\.py: error: data\.vocab_size=8000 is too large for the training split 'train' of "
                      r"(\S+) \((\d+) en and de sentences\): SentencePiece \(unigram\) can make "
                      r"at most (\d+) pieces from it\. Set data\.vocab_size to (\d+) or less",
                      result.stderr)
    assert match, result.stderr[-4000:]
    assert match.group(1) == str(tiny_corpus)
    assert int(match.group(2)) == 2 * len(PAIRS)
    largest = int(match.group(3))
    assert int(match.group(4)) == largest
    assert checkpoints(tmp_path) == []
    # The size offered is exactly SentencePiece's limit on these sentences.
    sentences = [en for en, _ in PAIRS] + [de for _, de in PAIRS]
    assert train_tokenizer(sentences, vocab_size=largest, num_threads=1).vocab_size == largest
    with pytest.raises(ValueError, match=f"at most {largest} pieces"):
        train_tokenizer(sentences, vocab_size=largest + 1, num_threads=1)


@pytest.mark.slow
def test_corpus_error_is_one_line_naming_the_split(tiny_corpus, tmp_path):
    """A corpus problem found while preparing data (here a split name with no
    files) ends the run with the CorpusError's message, no traceback."""
    result = run_train(tiny_corpus, tmp_path, "--data.valid_split", "dev")
    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    assert re.search(r"train\.py: error: no file for split 'dev', language 'en' in \S+: "
                     r"expected dev\.en or dev\.en\.gz", result.stderr), result.stderr[-4000:]
    assert "splits found:" in result.stderr
    assert checkpoints(tmp_path) == []
