"""Damaged files: every kind of file the project reads, damaged in every way its
format can detect, through every command that reads it.

One table. A row names a file kind, the command and its arguments; each row runs
once per damage its format can detect: emptied, cut in half, bytes changed
inside a compressed or checksummed file, replaced by a file of another format.
Every case runs in-process as ``python scripts/<command> ...`` would
(``runpy`` with ``__name__ == "__main__"``) and must end with exit status 2, no
traceback, one ``<command>: error:`` line naming the damaged file, and every
file that was there before unchanged. The token cache is the exception: it is
derived data, rebuilt (with a warning) to identical ids.
"""

from __future__ import annotations

import gzip
import json
import logging
import importlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import commands.export_ctranslate2 as export_command
from conftest import tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "multi30k_cpu.yaml"


def _empty(data: bytes) -> bytes:
    return b""


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(data: bytes) -> bytes:
    changed = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 8):
        changed[i] ^= 0x5A
    return bytes(changed)


def _png(data: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _text(data: bytes) -> bytes:
    return b"this is not the file you are looking for\n" * 20


BINARY = {"emptied": _empty, "cut in half": _half, "bytes changed": _flip,
          "another format": _png}
JSON = {"emptied": _empty, "cut in half": _half, "another format": _png}
YAML = {"emptied": _empty, "another format": _png}  # a YAML file cut short may still parse


@pytest.fixture(scope="module")
def world(multi30k_small, tmp_path_factory) -> dict[str, str]:
    """Intact files of every kind, in one folder: a corpus, a checkpoint, a run folder
    with full and weights-only checkpoints, a CTranslate2 export, tokenized references,
    an input file, a config and a comparison's result.json."""
    tmp = tmp_path_factory.mktemp("damaged_world")
    corpus = tmp / "corpus"
    shutil.copytree(multi30k_small, corpus)
    ckpt = tiny_checkpoint(corpus, global_step=3)
    torch.save(ckpt, tmp / "model.ckpt")
    run = tmp / "run" / "checkpoints"
    (run / "epochs").mkdir(parents=True)
    torch.save({**ckpt, "global_step": 7, "optimizer_states": [{}]}, run / "best.ckpt")
    torch.save({**ckpt, "global_step": 9, "optimizer_states": [{}]}, run / "last.ckpt")
    torch.save({**ckpt, "global_step": 8}, run / "epochs" / "epoch=001.ckpt")
    weights_only = tmp / "run_weights_only" / "checkpoints"
    (weights_only / "epochs").mkdir(parents=True)
    torch.save({**ckpt, "global_step": 9, "optimizer_states": [{}]}, weights_only / "last.ckpt")
    torch.save({**ckpt, "global_step": 8}, weights_only / "epochs" / "epoch=001.ckpt")
    export_command.main(["--ckpt", str(tmp / "model.ckpt"), "--out", str(tmp / "ct2")])
    refs = tmp / "refs.tok.de.gz"
    with gzip.open(corpus / "val.de.gz", "rt") as f, gzip.open(refs, "wt") as out:
        out.write(f.read().lower())
    with gzip.open(tmp / "input.en.gz", "wt") as out:
        out.write("A dog runs.\nTwo men.\n" * 50)
    config = yaml.safe_load(CPU_CONFIG.read_text())
    config["data"].update(source=str(corpus), cache_dir=str(tmp / "cache"), vocab_size=200)
    config["trainer"]["default_root_dir"] = str(tmp / "run")
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    result = tmp / "compare" / "transformer_dot_seed1" / "result.json"
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"key": {}, "result": {"model": "transformer_dot", "seed": 1,
                                                         "notes": "x" * 400}}, indent=1))
    return {"tmp": str(tmp), "corpus": str(corpus), "ckpt": str(tmp / "model.ckpt"),
            "run": str(tmp / "run"), "ct2": str(tmp / "ct2"), "refs": str(refs),
            "input": str(tmp / "input.en.gz"), "config": str(tmp / "config.yaml"),
            "compare": str(tmp / "compare")}


def _train(*args: str) -> list[str]:
    return ["fit", "--config", "{config}", "--trainer.max_steps", "1",
            "--trainer.default_root_dir", "{tmp}/new_run", *args]


#: (file kind, the file, its damages, command, arguments, what else the line must say)
ROWS = [
    ("corpus file (.gz)", "{corpus}/train.en.gz", BINARY, "prepare_data.py",
     ["--config", "{config}"], "again"),
    ("corpus file (.gz)", "{corpus}/train.en.gz", BINARY, "train.py", _train(), "again"),
    ("corpus file (.gz)", "{corpus}/val.en.gz", BINARY, "evaluate.py",
     ["--ckpt", "{ckpt}", "--data", "{corpus}", "--split", "val", "--out", "{tmp}/eval_out"],
     "again"),
    ("--input file (.gz)", "{input}", {"cut in half": _half, "bytes changed": _flip},
     "translate.py", ["--ckpt", "{ckpt}", "--input", "{input}"], "again"),
    ("--tok-refs file (.gz)", "{refs}", {"cut in half": _half, "bytes changed": _flip},
     "evaluate.py", ["--ckpt", "{ckpt}", "--data", "{corpus}", "--split", "val",
                     "--tok-refs", "{refs}", "--out", "{tmp}/eval_out"], "again"),
    ("checkpoint", "{ckpt}", BINARY, "evaluate.py",
     ["--ckpt", "{ckpt}", "--data", "{corpus}", "--out", "{tmp}/eval_out"], "another checkpoint"),
    ("checkpoint", "{ckpt}", BINARY, "translate.py", ["--ckpt", "{ckpt}", "A dog."],
     "another checkpoint"),
    ("checkpoint", "{ckpt}", BINARY, "export_ctranslate2.py",
     ["--ckpt", "{ckpt}", "--out", "{tmp}/ct2_new"], "another checkpoint"),
    ("checkpoint", "{run}/checkpoints/epochs/epoch=001.ckpt", BINARY, "average_checkpoints.py",
     ["--inputs", "{run}/checkpoints/epochs/epoch=001.ckpt", "{ckpt}", "--out",
      "{tmp}/avg.ckpt"], "another checkpoint"),
    ("checkpoint (resume)", "{run}/checkpoints/last.ckpt", BINARY, "train.py",
     _train("--trainer.default_root_dir", "{run}", "--ckpt_path", "last"), "--ckpt_path {run}/checkpoints/best.ckpt (global step 7)"),
    ("checkpoint (resume, only weights-only ones left)",
     "{tmp}/run_weights_only/checkpoints/last.ckpt", BINARY, "train.py",
     _train("--trainer.default_root_dir", "{tmp}/run_weights_only", "--ckpt_path",
            "{tmp}/run_weights_only/checkpoints/last.ckpt"), "can be averaged"),
    ("CTranslate2 model.bin", "{ct2}/model.bin", BINARY, "translate.py",
     ["--ckpt", "{ct2}", "A dog."], "export_ctranslate2.py"),
    ("CTranslate2 model.bin", "{ct2}/model.bin", BINARY, "evaluate.py",
     ["--ckpt", "{ct2}", "--data", "{corpus}", "--out", "{tmp}/eval_out"], "export_ctranslate2.py"),
    ("CTranslate2 translation_settings.json", "{ct2}/translation_settings.json", JSON,
     "translate.py", ["--ckpt", "{ct2}", "A dog."], "export_ctranslate2.py"),
    ("SentencePiece model (CTranslate2 export)", "{ct2}/sentencepiece.model", BINARY,
     "translate.py", ["--ckpt", "{ct2}", "A dog."], "export_ctranslate2.py"),
    ("YAML config", "{config}", YAML, "train.py", _train(), "restore it"),
    ("YAML config", "{config}", YAML, "prepare_data.py", ["--config", "{config}"], "restore it"),
    ("YAML config", "{config}", YAML, "benchmark_train.py", ["--config", "{config}"],
     "restore it"),
    ("YAML config", "{config}", YAML, "compare_attention.py", ["{config}", "--out", "{tmp}/c"],
     "restore it"),
    ("comparison result.json", "{compare}/transformer_dot_seed1/result.json", JSON,
     "compare_attention.py", [str(REPO / "configs" / "compare_transformer_dot.yaml"), "--seeds",
                              "1", "--report-only", "--out", "{compare}"], "delete"),
]

CASES = [(kind, target, damage_name, damage, script, args, expected)
         for kind, target, damages, script, args, expected in ROWS
         for damage_name, damage in damages.items()]


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "cache" not in p.relative_to(root).parts}


@pytest.mark.parametrize("kind,target,damage_name,damage,script,args,expected", CASES,
                         ids=[f"{c[4]}:{c[0]}:{c[2]}" for c in CASES])
@pytest.mark.slow
def test_damaged_file_gives_one_line_and_exit_2(world, kind, target, damage_name, damage, script,
                                               args, expected, monkeypatch, capsys):
    path = Path(target.format(**world))
    intact = path.read_bytes()
    path.write_bytes(damage(intact))
    try:
        before = _snapshot(Path(world["tmp"]))
        monkeypatch.chdir(world["tmp"])
        with pytest.raises(SystemExit) as exit_info:
            command = importlib.import_module(f"commands.{Path(script).stem}")
            command.run([a.format(**world) for a in args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.startswith(f"{script}: error:")]
        assert len(lines) == 1, err
        assert str(path) in lines[0] or (kind.startswith("YAML") and path.name in lines[0]), \
            lines[0]
        assert expected.format(**world) in lines[0], lines[0]
        # nothing already there changed (new files, e.g. a log folder, may appear)
        assert {p: p.read_bytes() for p in before if p.is_file()} == before
    finally:
        path.write_bytes(intact)


CACHE_CASES = [(name, damage_name, damage)
               for name, damages in (("spm.model", BINARY), ("train.src.npy", BINARY),
                                     ("valid.tgt.offsets.npy", BINARY), ("manifest.json", JSON))
               for damage_name, damage in damages.items()]


@pytest.mark.parametrize("name,damage_name,damage", CACHE_CASES,
                         ids=[f"{c[0]}:{c[1]}" for c in CACHE_CASES])
@pytest.mark.slow
def test_damaged_token_cache_is_rebuilt_to_identical_ids(world, tmp_path, name, damage_name,
                                                         damage, capsys, caplog):
    """The cache is derived data: prepare_data.py rebuilds it with a one-line warning,
    exit 0, to identical ids. Sizes, lengths, offsets and spm.model's checksum are
    checked on every load; changed ids (same size) by --verify, which names the file."""
    from commands import prepare_data as prepare
    args = ["--config", world["config"], "--data.cache_dir", str(tmp_path)]
    manifest = prepare.main(args)
    folder = next((tmp_path / "tokenized").iterdir())
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".npy"}
    path = folder / name
    path.write_bytes(damage(path.read_bytes()))
    capsys.readouterr()
    if damage_name == "bytes changed" and name == "train.src.npy":
        with pytest.raises(SystemExit) as exit_info:
            prepare.main([*args, "--verify"])
        assert exit_info.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("prepare_data.py: error:") and str(path) in line, line
        path.unlink()  # what a user then does: the cheap check sees a missing file
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.datamodule"):
        rebuilt = prepare.main(args)
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 1 and "rebuilding it" in warnings[0] and name in warnings[0], warnings
    assert rebuilt["splits"] == manifest["splits"]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".npy"} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
