"""Load a self-contained checkpoint for evaluation and translation (no Lightning needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from data.tokenizer import Tokenizer
from model.build import build_model, config_from_dict

from .evaluation import DecodingConfig
from .module import CHECKPOINT_FORMAT

__all__ = ["CheckpointError", "Translator", "load_translator"]


class CheckpointError(ValueError):
    """A file that cannot serve as a translation checkpoint of this project."""


@dataclass
class Translator:
    """Everything a checkpoint holds for inference.

    Attributes:
        model: the network (:func:`model.build.build_model` of the saved
            config: a Transformer or an RNN encoder–decoder), in eval mode.
        tokenizer: the SentencePiece model it was trained with.
        hparams: the training hyperparameters (``max_len_a``, ``max_len_b`` ...).
        data_hparams: the data module's settings (languages, splits), if saved.
    """

    model: nn.Module
    tokenizer: Tokenizer
    hparams: dict
    data_hparams: dict

    def decoding(self, **overrides) -> DecodingConfig:
        """The checkpoint's decoding settings, with ``overrides`` (None values ignored)."""
        h = self.hparams
        settings = {"beam_size": h.get("beam_size", 1), "alpha": h.get("length_penalty", 1.0),
                    "max_len_a": h["max_len_a"], "max_len_b": h["max_len_b"]}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return DecodingConfig(**settings)


def load_translator(path: str | Path, device: str | torch.device = "cpu") -> Translator:
    """Read a checkpoint written by ``scripts/train.py`` onto ``device``.

    Raises:
        CheckpointError: if the file is missing, is not a checkpoint of this
            project, or its tokenizer and model disagree on the vocabulary.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the .ckpt file "
                              f"written under the run's checkpoints/ folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint of this project (no format marker "
            f"{CHECKPOINT_FORMAT!r}); train one with scripts/train.py")
    if "tokenizer_model" not in ckpt:
        raise CheckpointError(f"{path} holds no SentencePiece model; it was saved before "
                              f"the tokenizer was attached")
    hparams = dict(ckpt["hyper_parameters"])
    try:
        config = config_from_dict(hparams["config"])
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    tokenizer = Tokenizer(ckpt["tokenizer_model"])
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: the embedded tokenizer has {tokenizer.vocab_size} pieces but the model "
            f"has vocab_size={config.vocab_size}; the file is inconsistent, use another checkpoint")
    model = build_model(config)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    model.to(device).eval()
    return Translator(model, tokenizer, hparams, dict(ckpt.get("datamodule_hyper_parameters", {})))
