"""The encoder–decoder Transformer, built from this package's modules."""

from __future__ import annotations

import torch
from torch import nn

from .attention import AdditiveAttention, DotProductAttention
from .config import TransformerConfig
from .decoder import DecoderCache, TransformerDecoder
from .encoder import TransformerEncoder

__all__ = ["Transformer"]


class Transformer(nn.Module):
    """Encoder–decoder Transformer for sequence-to-sequence translation.

    ``encode`` and ``decode`` are the two halves that training (``forward``)
    and every decoding algorithm share. Plain PyTorch: loss, optimizer and
    metrics live in the training code.

    Args:
        config: every size and choice; see :class:`TransformerConfig`.

    Shapes:
        ``src`` ``(B, S)`` token ids, ``src_valid_len`` ``(B,)``,
        ``tgt_in`` ``(B, T)`` decoder input (BOS + target) -> logits
        ``(B, T, V)``.

    Source: Vaswani et al. 2017; d2l.ai §11.7 (``Transformer`` +
    ``EncoderDecoder``).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        self.src_embedding = nn.Embedding(c.vocab_size, c.num_hiddens, padding_idx=c.pad_id)
        self.tgt_embedding = (self.src_embedding if c.tie_embeddings else
                              nn.Embedding(c.vocab_size, c.num_hiddens, padding_idx=c.pad_id))
        output = None if c.tie_embeddings else nn.Linear(c.num_hiddens, c.vocab_size, bias=False)
        self.encoder = TransformerEncoder(c, self.src_embedding)
        self.decoder = TransformerDecoder(c, self.tgt_embedding, output)
        self.reset_parameters()
        self.keep_attention_weights(False)

    def reset_parameters(self) -> None:
        """Xavier-uniform linear layers, ``N(0, D^-1/2)`` embeddings (fairseq's init)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for embedding in {self.src_embedding, self.tgt_embedding}:
            nn.init.normal_(embedding.weight, std=self.config.num_hiddens ** -0.5)
            with torch.no_grad():
                embedding.weight[self.config.pad_id].zero_()

    def keep_attention_weights(self, keep: bool = True) -> "Transformer":
        """Keep (True) or drop (False, the fast default) every layer's attention
        weights; with dot-product scoring, False selects the fused kernel."""
        for module in self.modules():
            if isinstance(module, (DotProductAttention, AdditiveAttention)):
                module.keep_weights = keep
        return self

    def encode(self, src: torch.Tensor, src_valid_len: torch.Tensor | None) -> torch.Tensor:
        """``(B, S)`` ids, ``(B,)`` lengths -> encoder outputs ``(B, S, D)``."""
        return self.encoder(src, src_valid_len)

    def decode(self, tgt_in: torch.Tensor, enc_outputs: torch.Tensor,
               src_valid_len: torch.Tensor | None, cache: DecoderCache | None = None
               ) -> torch.Tensor:
        """``(B, T)`` decoder input, ``(B, S, D)`` encoder outputs -> logits ``(B, T, V)``.

        With a ``cache`` (from :meth:`init_cache`), ``tgt_in`` holds only the
        new positions and earlier keys/values are reused (incremental decoding).
        """
        return self.decoder(tgt_in, enc_outputs, src_valid_len, cache)

    def init_cache(self) -> DecoderCache:
        """An empty key/value cache for incremental decoding."""
        return DecoderCache(len(self.decoder.blks))

    def forward(self, src: torch.Tensor, src_valid_len: torch.Tensor | None,
                tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src, src_valid_len), src_valid_len)

    def num_parameters(self) -> int:
        """Number of distinct trainable parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
