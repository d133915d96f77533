"""Shared fixtures: a small slice of the real Multi30k corpus, written to a temp dir."""

from __future__ import annotations

import gzip
import importlib
import json
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"
#: The shipped recipes (``configs/base.yaml`` is read under each of them).
RECIPES = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("base"))


def load_script(name: str):
    """The command module behind ``scripts/{name}.py`` (:mod:`commands`): tests call
    its ``main(argv)`` (the work) or ``run(argv)`` (with the one-line errors)."""
    return importlib.import_module(f"commands.{name}")


def read_raw(directory: Path, split: str, lang: str) -> list[str]:
    """The lines of ``{split}.{lang}`` or ``{split}.{lang}.gz`` in ``directory``."""
    plain = directory / f"{split}.{lang}"
    opener = open(plain, encoding="utf-8") if plain.is_file() else \
        gzip.open(directory / f"{split}.{lang}.gz", "rt", encoding="utf-8")
    with opener as f:
        return [line.rstrip("\n") for line in f]


def _head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [next(f) for _ in range(n)]


@pytest.fixture(scope="session")
def multi30k_small(tmp_path_factory) -> Path:
    """A copy of the first lines of Multi30k en/de: train 400, val 60, test 50 pairs.

    Train and val are gzip-compressed, test is plain text, so both file forms
    of the ``{split}.{lang}[.gz]`` layout are exercised.
    """
    if not MULTI30K.is_dir():
        pytest.skip(f"Multi30k not found at {MULTI30K} (the shared/ folder beside the repo)")
    out = tmp_path_factory.mktemp("multi30k_small")
    for split, n, compress in (("train", 400, True), ("val", 60, True),
                               ("test_2016_flickr", 50, False)):
        for lang in ("en", "de"):
            lines = _head(MULTI30K / f"{split}.{lang}.gz", n)
            if compress:
                with gzip.open(out / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                    f.writelines(lines)
            else:
                (out / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return out


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tensors in tests are tiny: a second intra-op thread only adds overhead
    (tens of times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def base_callbacks(*extra: dict) -> list[dict]:
    """``configs/base.yaml``'s ``trainer.callbacks`` (paths relative to the run
    directory) followed by ``extra``: a test that adds a callback restates the
    list (jsonargparse replaces a list, it cannot append to it from a file)."""
    base = yaml.safe_load((REPO / "configs" / "base.yaml").read_text())
    return json.loads(json.dumps(base["trainer"]["callbacks"])) + list(extra)


def checkpoint_every(updates: int) -> dict:
    """Override keys that write ``last.ckpt`` and the averaging checkpoints every
    ``updates`` optimizer updates (the recipes' 50 to 1000 are too far apart for a
    test run of tens of updates)."""
    return {"checkpoint_interval": {"every_n_train_steps": updates},
            "averaging_checkpoints": {"every_n_train_steps": updates}}


def tiny_checkpoint(corpus: Path, global_step: int = 0) -> dict:
    """An untrained 1+1-block Transformer's checkpoint dict (D=16, a 200-piece
    SentencePiece model trained on ``corpus``'s training split), as train.py writes it."""
    import lightning as L

    from data.tokenizer import train_tokenizer
    from model.config import TransformerConfig
    from training.module import TranslationModule

    with gzip.open(corpus / "train.en.gz", "rt") as f_en, \
            gzip.open(corpus / "train.de.gz", "rt") as f_de:
        text = [line.strip() for line in f_en] + [line.strip() for line in f_de]
    tokenizer = train_tokenizer(text, vocab_size=200, num_threads=1)
    torch.manual_seed(0)
    module = TranslationModule(TransformerConfig(vocab_size=200, num_hiddens=16, ffn_num_hiddens=32,
                                                 num_heads=2, num_enc_blks=1, num_dec_blks=1,
                                                 max_len=32), warmup_steps=1)
    module.set_tokenizer(tokenizer)
    ckpt = {"epoch": 0, "global_step": global_step, "pytorch-lightning_version": L.__version__,
            "state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(ckpt)
    return ckpt
