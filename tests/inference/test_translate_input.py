"""``scripts/translate.py`` on bad input: it never crashes and writes exactly
one output line per input line.

Bad input here: control characters inside a line (including the ones
``str.splitlines`` treats as line breaks), scripts the tokenizer never saw, a
10,000-character line, random bytes that are not UTF-8, and command-line
arguments that are not UTF-8.

References: the input's line count as ``wc -l`` counts "\\n" (plus an
unterminated last line), computed here from the bytes; and
:func:`inference.decoding.translate` on the same lines, decoded here with
``bytes.decode(errors="replace")``, as the expected translation of every line
with something to translate (SentencePiece yields at least one piece).
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.batching import ParallelDataset, collate_batch
from data.tokenizer import EOS_ID, UNK_ID, train_tokenizer
from model.config import TransformerConfig
from inference.checkpoint import Translator, load_translator
from inference.decoding import translate
from training.module import CHECKPOINT_FORMAT, TranslationModule

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "translate.py"
TINY = {"num_hiddens": 32, "ffn_num_hiddens": 64, "num_heads": 2,
        "num_enc_blks": 1, "num_dec_blks": 1}
MAX_LEN = 64

LONG = ("A man in a blue shirt rides a bike down the street. " * 200)[:10_000]
#: Text lines of the stdin / --input cases; LONG is line 16.
LINES = [
    "A man rides a bike.",
    "",
    "a\x00b\x07c\x1bd",                       # NUL, BEL, ESC inside a line
    "Two dogs\r play in the snow.",          # a carriage return in the middle
    "page\x0cbreak and vertical\x0btab",     # form feed, vertical tab
    "one\u2028two \u2029 three\x85four",     # Unicode line/paragraph separators, NEL
    "\x1c\x1d\x1e\x1f",                      # only separators SentencePiece drops
    "   \t ",
    "\x07\x1b",                              # only control characters
    "中文句子。",                              # scripts the tokenizer never saw
    "नमस्ते दुनिया",
    "😀🚀 A dog runs.",
    "A woman is reading a book on a bench.",
    "",
    "A little girl climbs into a wooden playhouse.",
    LONG,
    "Two dogs play in the snow.",
]
LONG_LINE = LINES.index(LONG) + 1


# ---------------------------------------------------------------- helpers
def read_train(directory: Path, lang: str) -> list[str]:
    with gzip.open(directory / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def run_translate(ckpt: Path, args: list, stdin: bytes | None = None
                  ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--ckpt", str(ckpt), "--device", "cpu",
                           *args], input=stdin if stdin is not None else b"",
                          capture_output=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def line_count(data: bytes) -> int:
    """Lines as ``wc -l`` counts them ("\\n"), plus an unterminated last line."""
    return data.count(b"\n") + (len(data) > 0 and not data.endswith(b"\n"))


def output_lines(result: subprocess.CompletedProcess) -> list[str]:
    text = result.stdout.decode("utf-8")
    assert text == "" or text.endswith("\n")
    return text.split("\n")[:-1]


def expected_outputs(translator: Translator, lines: list[str], batch_size: int) -> list[str]:
    """What translate.py should print: per chunk of ``batch_size`` lines (the script
    translates chunk by chunk), ``translate()`` of the lines that have at least one
    SentencePiece piece; an empty line for the others."""
    out = []
    for start in range(0, len(lines), batch_size):
        chunk = lines[start: start + batch_size]
        pieces = translator.tokenizer.encode(chunk)
        todo = [line for line, ids in zip(chunk, pieces) if ids]
        done = iter(translate(translator.model, translator.tokenizer, todo, MAX_LEN,
                              decoding=translator.decoding()))
        out += [next(done) if ids else "" for ids in pieces]
    return out


def truncation_warnings(stderr: str) -> list[int]:
    return [int(n) for n in re.findall(r"warning: input line (\d+) \(\d+ characters\) is "
                                       r"longer than the model's", stderr)]


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def checkpoint(multi30k_small, tmp_path_factory) -> Path:
    """A checkpoint in the project's format: a tiny Transformer (``max_len`` 64)
    trained for 20 steps on the 400 Multi30k pairs through a Lightning Trainer,
    its SentencePiece model embedded by ``TranslationModule.on_save_checkpoint``."""
    tmp = tmp_path_factory.mktemp("translate_input")
    en, de = read_train(multi30k_small, "en"), read_train(multi30k_small, "de")
    tokenizer = train_tokenizer(en + de, vocab_size=400, num_threads=1)
    src = [np.asarray(ids[: MAX_LEN - 1] + [EOS_ID]) for ids in tokenizer.encode(en)]
    tgt = [np.asarray(ids[: MAX_LEN - 1]) for ids in tokenizer.encode(de)]
    torch.manual_seed(0)  # module fixtures run before the per-test seed of conftest.py
    module = TranslationModule(TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=MAX_LEN,
                                                 dropout=0.0, **TINY),
                               lr=0.01, warmup_steps=1)
    module.set_tokenizer(tokenizer)
    loader = DataLoader(ParallelDataset(src, tgt), batch_size=32, collate_fn=collate_batch)
    trainer = L.Trainer(max_steps=20, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp))
    trainer.fit(module, loader)
    path = tmp / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def translator(checkpoint) -> Translator:
    return load_translator(checkpoint)


# ------------------------------------------------------------------ tests
@pytest.mark.slow
def test_checkpoint_is_the_projects_format(checkpoint, translator):
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert ckpt["tokenizer_model"] == translator.tokenizer.model_proto
    assert translator.model.config.max_len == MAX_LEN


@pytest.mark.parametrize("how", ["stdin", "input"])
@pytest.mark.slow
def test_text_with_bad_lines(checkpoint, translator, tmp_path, how):
    """Control characters, unseen scripts, blank lines and a 10,000-character
    line, over four chunks of ``--batch-size 4``: one output line per "\\n"
    line, each equal to ``translate()`` of that line, and one truncation
    warning naming the long line."""
    data = "".join(line + "\n" for line in LINES).encode("utf-8")
    assert len(LONG) == 10_000
    # The case that matters: str.splitlines (and universal newlines, "\r") see more lines.
    assert len(data.decode("utf-8").splitlines()) > len(LINES) == line_count(data)
    # The unseen scripts really are unknown to the tokenizer.
    assert all(UNK_ID in ids for ids in translator.tokenizer.encode(LINES[9:12]))
    if how == "stdin":
        result = run_translate(checkpoint, ["--batch-size", "4"], stdin=data)
    else:
        path = tmp_path / "bad.en"
        path.write_bytes(data)
        result = run_translate(checkpoint, ["--batch-size", "4", "--input", str(path)])
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 0, stderr
    outputs = output_lines(result)
    assert len(outputs) == line_count(data)
    expected = expected_outputs(translator, LINES, 4)
    assert outputs == expected
    # Nothing to translate gives an empty line; the model does say something elsewhere.
    for blank in ("", "   \t ", "\x07\x1b", "\x1c\x1d\x1e\x1f"):
        assert outputs[LINES.index(blank)] == ""
    assert sum(bool(out.strip()) for out in expected) >= 8
    assert truncation_warnings(stderr) == [LONG_LINE]
    assert f"input line {LONG_LINE} (10000 characters)" in stderr
    assert "not valid UTF-8" not in stderr


@pytest.mark.parametrize("how, terminated", [("stdin", False), ("input", True)])
@pytest.mark.slow
def test_binary_input(checkpoint, translator, tmp_path, how, terminated):
    """Random bytes (NUL, CR, invalid UTF-8): exit 0, one output line per "\\n"
    line, one encoding warning naming the first undecodable line, and the
    translations of the lines as decoded with U+FFFD replacements."""
    rng = np.random.default_rng(7)
    chunks = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes().replace(b"\n", b"")
              for n in rng.integers(0, 60, size=25)]
    chunks[3] = "Ein Hund läuft.\r".encode("utf-8")  # a valid CRLF line among them
    data = b"\n".join(chunks) + (b"\n" if terminated else b"")
    raw_lines = chunks  # split on b"\n" only
    lines = [raw.decode("utf-8", errors="replace").rstrip("\r") for raw in raw_lines]
    first_bad = next(i for i, raw in enumerate(raw_lines, 1) if not is_utf8(raw))
    if how == "stdin":
        result = run_translate(checkpoint, [], stdin=data)
    else:
        path = tmp_path / "random.bin"
        path.write_bytes(data)
        result = run_translate(checkpoint, ["--input", str(path)])
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 0, stderr
    outputs = output_lines(result)
    assert len(outputs) == line_count(data) == len(raw_lines)
    assert outputs == expected_outputs(translator, lines, 64)
    warnings = [w for w in stderr.splitlines() if "not valid UTF-8" in w]
    assert len(warnings) == 1
    assert f"first at input line {first_bad})" in warnings[0]


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.slow
def test_arguments_that_are_not_utf8(checkpoint, translator):
    """Sentences on the command line in another encoding (Latin-1 bytes) are
    decoded with replacements, with a warning, instead of crashing SentencePiece."""
    latin1 = "Ein Mädchen läuft.".encode("latin-1")
    result = run_translate(checkpoint, [latin1, "A dog runs.", "\x07"])
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 0, stderr
    lines = [latin1.decode("utf-8", errors="replace"), "A dog runs.", "\x07"]
    assert output_lines(result) == expected_outputs(translator, lines, 64)
    assert "the command line is not valid UTF-8 (first at input line 1)" in stderr


def test_missing_input_file(tmp_path, capsys):
    import commands.translate as script

    with pytest.raises(SystemExit) as info:
        script.parse_args(["--ckpt", "x.ckpt", "--input", str(tmp_path / "nope.en")])
    assert info.value.code == 2
    assert f"--input {tmp_path / 'nope.en'} is not a file" in capsys.readouterr().err
