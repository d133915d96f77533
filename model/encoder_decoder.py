"""The encoder–decoder base class shared by the Transformer and the RNN baseline."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EncoderDecoder"]


class EncoderDecoder(nn.Module):
    """An encoder and a decoder over shared (or separate) token embeddings.

    ``encode`` and ``decode`` are the two halves that training (``forward``)
    and every decoding algorithm (:mod:`model.decoding`) share; a subclass
    builds ``self.encoder`` and ``self.decoder`` and says how to start an
    incremental-decoding cache (:meth:`init_cache`).

    Args:
        config: a config with ``vocab_size``, ``num_hiddens``, ``pad_id`` and
            ``tie_embeddings`` (source embedding, target embedding and output
            projection share one matrix when True).

    Shapes:
        ``src`` ``(B, S)`` token ids, ``src_valid_len`` ``(B,)``, ``tgt_in``
        ``(B, T)`` decoder input (BOS + target) -> logits ``(B, T, V)``.

    Source: d2l.ai §10.6 (``EncoderDecoder``); Press & Wolf 2017 (tied
    embeddings).
    """

    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.src_embedding = nn.Embedding(c.vocab_size, c.num_hiddens, padding_idx=c.pad_id)
        self.tgt_embedding = (self.src_embedding if c.tie_embeddings else
                              nn.Embedding(c.vocab_size, c.num_hiddens, padding_idx=c.pad_id))

    def output_layer(self) -> nn.Linear | None:
        """A new ``D -> V`` projection, or None when it is tied to the embedding."""
        if self.config.tie_embeddings:
            return None
        return nn.Linear(self.config.num_hiddens, self.config.vocab_size, bias=False)

    def reset_embeddings(self) -> None:
        """``N(0, D^-1/2)`` embeddings (they are scaled by ``sqrt(D)`` or feed a
        recurrent layer) with a zero padding row, as in fairseq."""
        for embedding in {self.src_embedding, self.tgt_embedding}:
            nn.init.normal_(embedding.weight, std=self.config.num_hiddens ** -0.5)
            with torch.no_grad():
                embedding.weight[self.config.pad_id].zero_()

    def keep_attention_weights(self, keep: bool = True) -> "EncoderDecoder":
        """Keep (True) or drop (False, the fast default) the attention weights of
        every module that can keep them (``keep_weights``); with dot-product
        scoring, False selects the fused kernel."""
        for module in self.modules():
            if hasattr(module, "keep_weights"):
                module.keep_weights = keep
        return self

    def encode(self, src: torch.Tensor, src_valid_len: torch.Tensor | None) -> torch.Tensor:
        """``(B, S)`` ids, ``(B,)`` lengths -> encoder outputs ``(B, S, D)``."""
        return self.encoder(src, src_valid_len)

    def decode(self, tgt_in: torch.Tensor, enc_outputs: torch.Tensor,
               src_valid_len: torch.Tensor | None, cache=None,
               output_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` decoder input, ``(B, S, D)`` encoder outputs -> logits ``(B, T, V)``.

        With a ``cache`` (from :meth:`init_cache`), ``tgt_in`` holds only the
        new positions and what earlier steps computed is reused (incremental
        decoding); the cache is updated. With ``output_mask`` ``(B, T)`` bool,
        only the True positions' logits, ``(N, V)`` in row-major order.
        """
        return self.decoder(tgt_in, enc_outputs, src_valid_len, cache, output_mask=output_mask)

    def init_cache(self):
        """An empty cache for incremental decoding."""
        raise NotImplementedError

    def forward(self, src: torch.Tensor, src_valid_len: torch.Tensor | None,
                tgt_in: torch.Tensor, output_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)``; with ``output_mask`` ``(B, T)``
        bool, only the True positions' logits, ``(N, V)`` in row-major order
        (the others skip the output layer: training passes the non-padding
        target positions)."""
        return self.decode(tgt_in, self.encode(src, src_valid_len), src_valid_len,
                           output_mask=output_mask)

    def num_parameters(self) -> int:
        """Number of distinct trainable parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
