"""Load a self-contained checkpoint for evaluation and translation (no Lightning needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from data.files import checkpoint_damage
from data.tokenizer import Tokenizer
from model.build import build_model, config_from_dict

from .ct2 import is_ctranslate2_model, load_ctranslate2
from .translator import ENGINES, CheckpointError, Translator

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "ENGINES", "Translator", "load_translator",
           "read_checkpoint"]

#: Marker every checkpoint of this project carries (``checkpoint["format"]``,
#: written by :meth:`training.module.TranslationModule.on_save_checkpoint`).
CHECKPOINT_FORMAT = "attention-nmt/1"


def read_checkpoint(path: str | Path, mmap: bool = False,
                    fix: str = "use another checkpoint of the run (best.ckpt, last.ckpt or an "
                               "epoch checkpoint), or copy the file again") -> dict:
    """The dict of a checkpoint file of this project, tensors on the CPU.

    The zip container is checked first (:func:`data.files.checkpoint_damage`:
    empty, cut short, a member whose CRC-32 does not match, another format),
    since ``torch.load`` would load changed bytes silently.

    Args:
        mmap: memory-map the tensors instead of reading them (for looking at
            a few entries of many files).
        fix: what the message of a damaged file says to do.

    Raises:
        CheckpointError: if the file is missing, damaged (the message says
            how), or not written by this project (no ``CHECKPOINT_FORMAT`` marker).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; pass a "
                              f".ckpt file in it, e.g. {path}/checkpoints/last.ckpt")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .ckpt file "
                              f"written under a run's checkpoints/ folder")
    damage = checkpoint_damage(path)
    if damage is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: {damage}; {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise CheckpointError(f"checkpoint {path} is damaged: not a readable PyTorch checkpoint "
                              f"({' '.join(str(err).split())[:300]}); {fix}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint of this project (no format marker "
            f"{CHECKPOINT_FORMAT!r}); train one with scripts/train.py")
    return ckpt


def load_translator(path: str | Path, device: str | torch.device = "cpu", engine: str = "auto",
                    **ctranslate2_options) -> Translator:
    """Read a checkpoint written by ``scripts/train.py`` onto ``device``; a
    directory written by ``scripts/export_ctranslate2.py`` gives a
    :class:`inference.ct2.CTranslate2Translator` (same interface, CTranslate2
    engine; ``ctranslate2_options`` go to :func:`inference.ct2.load_ctranslate2`:
    ``compute_type``, ``threads``, ``lenpen_style``).

    ``engine``: ``"auto"`` (by what ``path`` is), ``"pytorch"`` (a checkpoint
    file only) or ``"ctranslate2"`` (an exported directory only).

    Raises:
        CheckpointError: if the file is missing, is not a checkpoint of this
            project, or its tokenizer and model disagree (vocabulary size,
            special ids, or tokenizer bytes that are no SentencePiece model);
            the message says which. Tensors are mapped to the CPU first, so a
            checkpoint written on a GPU loads on a machine without one.
    """
    path = Path(path)
    if engine not in ENGINES:
        raise CheckpointError(f"--engine {engine} is unknown; use one of {', '.join(ENGINES)}")
    if engine == "ctranslate2" and not path.is_dir():
        raise CheckpointError(
            f"--engine ctranslate2 needs a CTranslate2 model directory, but {path} is not a "
            f"directory; export the checkpoint first: python scripts/export_ctranslate2.py "
            f"--ckpt {path} --out DIR, then pass DIR")
    if path.is_dir():
        if is_ctranslate2_model(path) and engine != "pytorch":
            return load_ctranslate2(path, device, **ctranslate2_options)
        if is_ctranslate2_model(path):
            raise CheckpointError(f"--engine pytorch needs a checkpoint file, but {path} is a "
                                  f"CTranslate2 model directory; pass the .ckpt it was exported "
                                  f"from, or --engine ctranslate2")
        raise CheckpointError(
            f"checkpoint {path} is a directory, not a checkpoint file nor a CTranslate2 model "
            f"(no model.bin in it); pass a .ckpt file such as {path}/checkpoints/last.ckpt, "
            f"or a directory written by scripts/export_ctranslate2.py")
    set_options = {k: v for k, v in ctranslate2_options.items()
                   if v not in (None, "default", "gnmt")}  # PyTorch beam search is GNMT
    if set_options:
        named = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in set_options.items())
        raise CheckpointError(f"{named}: CTranslate2 options, but {path} is a PyTorch "
                              f"checkpoint; pass a CTranslate2 model directory, or drop them")
    ckpt = read_checkpoint(path)
    if "tokenizer_model" not in ckpt:
        raise CheckpointError(f"{path} holds no SentencePiece model; it was saved before "
                              f"the tokenizer was attached")
    hparams = dict(ckpt["hyper_parameters"])
    try:
        config = config_from_dict(hparams["config"])
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    try:
        tokenizer = Tokenizer(ckpt["tokenizer_model"])
    except (ValueError, RuntimeError, TypeError) as err:  # bad ids, or not SentencePiece bytes
        raise CheckpointError(
            f"{path}: the embedded tokenizer does not fit the model ({err}); the model was "
            f"trained with pad/unk/bos/eos ids 0/1/2/3, so this file is inconsistent, use "
            f"another checkpoint") from err
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: the embedded tokenizer has {tokenizer.vocab_size} pieces but the model "
            f"has vocab_size={config.vocab_size}; the file is inconsistent, use another checkpoint")
    model = build_model(config)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    model.to(device).eval()
    return Translator(model, tokenizer, hparams, dict(ckpt.get("datamodule_hyper_parameters", {})))
