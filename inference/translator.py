"""What inference needs of a trained model: the :class:`Translator` (model,
tokenizer, decoding defaults, data settings), its error type, and the engine
names. A checkpoint (:mod:`inference.checkpoint`) and a CTranslate2 export
(:mod:`inference.ct2`) both give one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from data.reading import column
from data.tokenizer import Tokenizer

from .decoding import (DecodingConfig, DecodingError, Hypothesis, length_limit_problem,
                         source_batches, translate_batches)

from .options import ENGINES

__all__ = ["CheckpointError", "ENGINES", "Translator", "load_corpus_split"]


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

    @property
    def max_len(self) -> int:
        """Longest source in tokens (EOS included): the model's ``max_len``."""
        return int(self.model.config.max_len)

    @property
    def engine_name(self) -> str:
        """``"pytorch"``; ``"ctranslate2 <compute type>"`` for an exported model."""
        return "pytorch"

    @torch.no_grad()
    def translate_ids(self, ids: list[list[int]], decoding: DecodingConfig,
                      device: str | torch.device = "cpu", max_tokens: int = 8192
                      ) -> list[list[Hypothesis]]:
        """Translate N sources given as piece ids (no EOS) in length-bucketed
        batches of at most ``max_tokens`` source tokens.

        Sources longer than ``max_len - 1`` pieces are truncated. Returns, per
        source in input order, its ``decoding.nbest`` hypotheses, best first.
        """
        if not ids:
            return []
        loader, _ = source_batches(self.tokenizer, None, self.max_len, max_tokens, ids=ids)
        return translate_batches(self.model, self.tokenizer, loader, len(ids), device, decoding)

    def decoding(self, **overrides) -> DecodingConfig:
        """The checkpoint's decoding settings, with ``overrides`` (None values ignored).

        Raises:
            inference.decoding.DecodingError: if the length limit
                ``max_len_a * S + max_len_b`` would leave every output empty.
        """
        h = self.hparams
        settings = {"beam_size": h.get("beam_size", 1), "alpha": h.get("length_penalty", 1.0),
                    "max_len_a": h["max_len_a"], "max_len_b": h["max_len_b"]}
        given = {k: v for k, v in overrides.items() if v is not None}
        settings.update(given)
        problem = length_limit_problem(settings["max_len_a"], settings["max_len_b"])
        if problem:
            source = ("" if {"max_len_a", "max_len_b"} <= set(given)
                      else " (the values not given come from the checkpoint)")
            raise DecodingError(problem + source)
        return DecodingConfig(**settings)

    def load_split(self, split: str | None = None, source: str | None = None,
                   src_lang: str | None = None, tgt_lang: str | None = None,
                   resolve: Callable[[str], str] = str) -> tuple[list[str], list[str], dict]:
        """Raw sources and references of a split of the corpus the model was trained on.

        Every argument left None comes from the checkpoint's data settings
        (the test split by default; a Tatoeba zip is split with the saved
        sizes and seed, so the test set is the one training held out).
        ``resolve`` maps the saved relative paths (source, cache folder).

        Returns:
            ``(sources, references, settings)`` where ``settings`` holds the
            ``split``, ``src_lang`` and ``tgt_lang`` used.

        Raises:
            data.corpus.CorpusError: for a missing or misaligned corpus.
        """
        return load_corpus_split(self.data_hparams, split, source, src_lang, tgt_lang, resolve)


def load_corpus_split(data: dict, split: str | None = None, source: str | None = None,
                      src_lang: str | None = None, tgt_lang: str | None = None,
                      resolve: Callable[[str], str] = str) -> tuple[list[str], list[str], dict]:
    """Raw sources and references of a split of the corpus that data settings
    describe: :meth:`Translator.load_split` for the settings of a checkpoint,
    or of a config's ``data`` section (without a model).

    Args:
        data: the data module's settings (``source``, ``src_lang``,
            ``tgt_lang``, ``test_split``, ``cache_dir``, ``hub_config``, and a
            Tatoeba zip's ``valid_size``, ``test_size``, ``split_seed``);
            missing keys take the data module's defaults (Multi30k en->de).
        split, source, src_lang, tgt_lang: override ``data`` (None: from it;
            the split defaults to its test split).
        resolve: maps the saved relative paths (source, cache folder).

    Returns:
        ``(sources, references, settings)``: one raw sentence per line and the
        ``split``, ``src_lang`` and ``tgt_lang`` used.

    Raises:
        data.corpus.CorpusError: for a missing or misaligned corpus.
    """
    from data.corpus import load_parallel_corpus  # datasets: only when a split is read
    from data.tatoeba import GroupedSplit

    settings = {"split": split or data.get("test_split", "test_2016_flickr"),
                "src_lang": src_lang or data.get("src_lang", "en"),
                "tgt_lang": tgt_lang or data.get("tgt_lang", "de")}
    grouped = GroupedSplit(data.get("valid_size", 5000), data.get("test_size", 5000),
                           data.get("split_seed", 0))
    corpus = load_parallel_corpus(
        source or resolve(data.get("source", "../shared/data/multi30k")),
        settings["src_lang"], settings["tgt_lang"], [settings["split"]],
        cache_dir=os.path.join(resolve(data.get("cache_dir", ".cache")), "datasets"),
        hub_config=data.get("hub_config"), grouped_split=grouped)[settings["split"]]
    return column(corpus, "src"), column(corpus, "tgt"), settings
