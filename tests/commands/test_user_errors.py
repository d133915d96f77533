"""Bad options and config keys of the user-facing scripts: one line, exit status 2.

One table: each row is a script, its arguments and what the message must
name (the option or key, the value, and the fix). Every script runs
in-process as ``python scripts/<script> ...`` would run it (``runpy`` with
``__name__ == "__main__"``, so the scripts' own error handling is what is
tested), and must end with ``SystemExit(2)``, no traceback, and one
``<script>: error: ...`` line on stderr, before any work starts: files
already there are untouched.
"""

from __future__ import annotations

import gzip
import importlib
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = str(REPO / "configs" / "multi30k_cpu.yaml")


@pytest.fixture(scope="module")
def files(multi30k_small, tmp_path_factory) -> dict[str, str]:
    """Paths the table refers to: a tiny checkpoint, a plain directory, a corpus
    with empty files, and a run directory that holds another run's checkpoint."""
    tmp = tmp_path_factory.mktemp("user_errors")
    ckpt = tiny_checkpoint(multi30k_small, global_step=0)
    torch.save(ckpt, tmp / "tiny.ckpt")
    (tmp / "plain").mkdir()
    empty = tmp / "empty_corpus"
    empty.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "de"):
            with gzip.open(empty / f"{split}.{lang}.gz", "wt"):
                pass
    occupied = tmp / "occupied"
    (occupied / "checkpoints").mkdir(parents=True)
    (occupied / "checkpoints" / "last.ckpt").write_bytes(b"another run")
    return {"ckpt": str(tmp / "tiny.ckpt"), "plain": str(tmp / "plain"), "empty": str(empty),
            "occupied": str(occupied), "tmp": str(tmp)}


def train(*args: str) -> list[str]:
    # max_steps 1 (with no warmup or cooldown): should a case be accepted by mistake, it
    # trains one update instead of the recipe.
    return ["fit", "--config", CPU_CONFIG, "--trainer.default_root_dir", "{tmp}/run",
            "--trainer.max_steps", "1", "--model.warmup_steps", "0", "--model.cooldown_steps", "0",
            *args]


#: (script, arguments, substrings the one error line must contain)
CASES = [
    ("train.py", train("--model.lr", "-1"), ["model.lr=-1", "must be positive"]),
    ("train.py", train("--model.warmup_steps", "-5"), ["model.warmup_steps=-5"]),
    ("train.py", train("--model.label_smoothing", "1.5"), ["model.label_smoothing=1.5"]),
    ("train.py", train("--model.max_len_a", "-1", "--model.max_len_b", "0"),
     ["model.max_len_a=-1", "model.max_len_b=0"]),
    ("train.py", train("--model.beam_size", "0"), ["model.beam_size=0"]),
    ("train.py", train("--trainer.max_steps", "-5"), ["max_steps", "-1"]),
    ("train.py", train("--data.max_tokens", "5"), ["data.max_tokens=5", "data.max_len=128"]),
    ("train.py", train("--data.num_workers", "-1"), ["data.num_workers=-1"]),
    ("train.py", train("--data.spm_alpha", "-0.5"), ["data.spm_alpha=-0.5", "e.g. 0.1"]),
    ("train.py", train("--data.source", "/some/missing/dir"),
     ["data.source=/some/missing/dir", "no such directory"]),
    ("train.py", train("--data.source", "{empty}"), ["train.en.gz is empty"]),
    ("train.py", ["fit", "--config", CPU_CONFIG, "--trainer.default_root_dir", "{occupied}"],
     ["already holds another run's checkpoints", "--ckpt_path", "last.ckpt"]),
    ("translate.py", ["--ckpt", "{plain}", "A dog."], ["is a directory", "checkpoint file"]),
    ("translate.py", ["--ckpt", "{tmp}/none.ckpt", "A dog."], ["does not exist"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--attention-plot", "{tmp}/missing_folder/a.png",
                      "A dog."], ["--attention-plot", "missing_folder", "does not exist"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--max-len-a", "-1", "--max-len-b", "0", "A dog."],
     ["--max-len-a=-1", "must be >= 0"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--max-len-a", "0", "--max-len-b", "1", "A dog."],
     ["translations would be empty"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--beam", "0", "A dog."], ["--beam must be at least 1"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--nbest", "3", "--beam", "2", "A dog."], ["--nbest 3"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--batch-size", "0", "A dog."], ["--batch-size"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--threads", "0", "A dog."], ["--threads"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--threads", "2", "A dog."],
     ["--threads 2", "CTranslate2 options"]),
    ("translate.py", ["--ckpt", "{ckpt}", "--input", "{tmp}/none.txt"], ["--input", "not a file"]),
    ("evaluate.py", ["--ckpt", "{ckpt}", "--beam", "0"], ["--beam 0"]),
    ("evaluate.py", ["--ckpt", "{ckpt}", "--lenpen", "-1"], ["--lenpen -1"]),
    ("evaluate.py", ["--ckpt", "{ckpt}", "--max-tokens", "0"], ["--max-tokens 0"]),
    ("evaluate.py", ["--ckpt", "{ckpt}", "--max-len-a", "-2"], ["--max-len-a=-2"]),
    ("evaluate.py", ["--ckpt", "{plain}"], ["is a directory"]),
    ("evaluate.py", ["--ckpt", "{ckpt}", "--beam", "1", "5"], ["need --select-on"]),
    ("evaluate.py", ["--ckpt", "{ckpt}", "--select-on", "val", "--split", "val"],
     ["--select-on val"]),
    ("export_ctranslate2.py", ["--ckpt", "{ckpt}", "--out", "{tmp}/x", "--quantization", "int3"],
     ["--quantization", "int3"]),
    ("export_ctranslate2.py", ["--ckpt", "{plain}", "--out", "{tmp}/y"], ["is a directory"]),
    ("average_checkpoints.py", ["--run", "{plain}", "--last", "3"], ["{plain}"]),
    ("average_checkpoints.py", ["--run", "{plain}", "--last", "0"], ["--last"]),
    ("compare_attention.py", ["--seeds", "-1"], ["--seeds -1"]),
    ("compare_attention.py", ["--max-steps", "0"], ["--max-steps 0"]),
    ("compare_attention.py", ["--num-evals", "0"], ["--num-evals 0"]),
    ("compare_attention.py", ["{tmp}/none.yaml"], ["none.yaml does not exist"]),
    ("benchmark_decode.py", ["--ckpt", "{ckpt}", "--repeats", "0"], ["--repeats 0"]),
    ("benchmark_decode.py", ["--ckpt", "{ckpt}", "--threads", "0"], ["--threads 0"]),
    ("benchmark_train.py", ["--config", CPU_CONFIG, "--steps", "0"], ["--steps 0"]),
    ("benchmark_attention.py", ["--heads", "0"], ["--heads 0"]),
    ("benchmark_attention.py", ["--variants", "foo"], ["--variants"]),
    ("benchmark_loss.py", ["--vocab", "1"], ["--vocab 1"]),
]


@pytest.mark.parametrize("script,args,expected", CASES,
                         ids=[f"{c[0]}:{' '.join(c[1][-2:])}" for c in CASES])
@pytest.mark.slow
def test_bad_input_gives_one_line_and_exit_2(files, script, args, expected, monkeypatch, capsys):
    args = [a.format(**files) for a in args]
    before = {p: p.read_bytes() for p in Path(files["tmp"]).rglob("*") if p.is_file()}
    monkeypatch.setattr(sys, "argv", [script])  # as the script names itself
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"commands.{Path(script).stem}").run(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{script}: error:") or "usage:" in err, err
    for text in expected:
        assert text.format(**files) in lines[0], lines[0]
    after = {p: p.read_bytes() for p in before}
    assert after == before  # nothing already written changed
