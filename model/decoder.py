"""Transformer decoder: masked self-attention, encoder–decoder attention, FFN.

Source: Vaswani et al. 2017, §3.1; d2l.ai §11.7.4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import MultiHeadAttention, causal_valid_lens
from .blocks import AddNorm, PositionWiseFFN
from .positional_encoding import PositionalEncoding

if TYPE_CHECKING:
    from .config import TransformerConfig

__all__ = ["DecoderCache", "TransformerDecoderBlock", "TransformerDecoder"]


class DecoderCache:
    """Keys and values a decoder has already computed, for incremental decoding.

    Each step of incremental decoding feeds only the newest target token(s);
    every block appends that token's self-attention keys/values to its
    ``"self"`` entry and computes its encoder–decoder keys/values (``"cross"``)
    once, on the first step.

    Args:
        num_blks: number of decoder blocks.

    Attributes:
        layers: per block, ``{"self": (K, V), "cross": (K, V)}``, each tensor
            ``(B, H, T or S, Dh)``; with additive scoring each tuple also holds
            the scoring function's projection of K (``(K, V, W_k K)``, see
            :meth:`~model.attention.MultiHeadAttention.scoring_keys`), so no
            step re-projects the keys of earlier steps or of the encoder.
        length: number of target positions already in the cache.

    Source: the incremental state of fairseq's ``FairseqIncrementalDecoder``;
    d2l.ai §11.7.4 keeps the same idea as ``state[2]``.
    """

    def __init__(self, num_blks: int):
        self.layers: list[dict[str, tuple[torch.Tensor, ...]]] = [
            {} for _ in range(num_blks)]
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` ``(B',)`` of every cached tensor (beam search)."""
        for layer in self.layers:
            for name, tensors in layer.items():
                layer[name] = tuple(t.index_select(0, index) for t in tensors)


class TransformerDecoderBlock(nn.Module):
    """Masked self-attention, encoder–decoder attention and FFN, each in :class:`AddNorm`.

    Self-attention is made causal by :func:`~model.attention.causal_valid_lens`:
    the same valid-length masking as padding, with query ``t`` seeing keys
    ``0..t``.

    Args:
        as :class:`~model.encoder.TransformerEncoderBlock`.

    Shapes:
        ``X`` ``(B, T, D)``, ``enc_outputs`` ``(B, S, D)``, ``enc_valid_lens``
        ``(B,)`` -> ``(B, T, D)``.

    Source: Vaswani et al. 2017, §3.1; d2l.ai §11.7.4.
    """

    def __init__(self, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, dropout: float,
                 attention: str = "dot", norm_first: bool = False, bias: bool = False,
                 attention_dropout: float | None = None, activation_dropout: float = 0.0):
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.attention1 = MultiHeadAttention(num_hiddens, num_heads, attention_dropout,
                                             bias=bias, scoring=attention)
        self.addnorm1 = AddNorm(num_hiddens, dropout, norm_first)
        self.attention2 = MultiHeadAttention(num_hiddens, num_heads, attention_dropout,
                                             bias=bias, scoring=attention)
        self.addnorm2 = AddNorm(num_hiddens, dropout, norm_first)
        self.ffn = PositionWiseFFN(ffn_num_hiddens, num_hiddens, activation_dropout)
        self.addnorm3 = AddNorm(num_hiddens, dropout, norm_first)

    def forward(self, X: torch.Tensor, enc_outputs: torch.Tensor,
                enc_valid_lens: torch.Tensor | None,
                cache: dict[str, tuple[torch.Tensor, ...]] | None = None,
                offset: int = 0) -> torch.Tensor:
        """Run the block on ``X`` ``(B, T, D)``.

        Without ``cache`` (training) ``X`` is the whole target prefix. With a
        cache dict (incremental decoding) ``X`` holds only the new positions
        ``offset .. offset + T - 1``; their self-attention keys/values are
        appended to ``cache["self"]`` and the encoder's keys/values are taken
        from (or stored in) ``cache["cross"]``.
        """
        dec_valid_lens = causal_valid_lens(X.shape[0], X.shape[1], X.device, offset)  # (B, T)

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            queries, keys, values = self.attention1.project_qkv(h)  # (B, H, T, Dh) each
            projected = None
            if cache is not None:
                new = (keys, values)
                scoring = self.attention1.scoring_keys(keys)  # additive: W_k of the new keys
                if scoring is not None:
                    new += (scoring,)
                if "self" in cache:  # (B, H, offset + T, Dh) each
                    new = tuple(torch.cat([old, t], dim=2) for old, t in zip(cache["self"], new))
                cache["self"] = new
                keys, values, projected = (*new, None)[:3]
            # Without earlier positions the mask is exactly causal: let the fused
            # kernel apply it (FlashAttention on GPU) instead of a (B, T, T) mask.
            causal = keys.shape[2] == queries.shape[2]
            return self.attention1.attend_heads(queries, keys, values, dec_valid_lens,
                                                is_causal=causal, projected_keys=projected)

        def cross_attention(h: torch.Tensor) -> torch.Tensor:
            if cache is None:
                return self.attention2(h, enc_outputs, enc_outputs, enc_valid_lens)
            if "cross" not in cache:
                keys, values = self.attention2.project_kv(enc_outputs, enc_outputs)
                scoring = self.attention2.scoring_keys(keys)
                cache["cross"] = (keys, values) + (() if scoring is None else (scoring,))
            keys, values, projected = (*cache["cross"], None)[:3]
            return self.attention2.attend(h, keys, values, enc_valid_lens,
                                          projected_keys=projected)

        X = self.addnorm1(X, self_attention)  # (B, T, D)
        X = self.addnorm2(X, cross_attention)  # (B, T, D)
        return self.addnorm3(X, self.ffn)  # (B, T, D)


class TransformerDecoder(nn.Module):
    """Stack of :class:`TransformerDecoderBlock` and the output projection.

    Args:
        config: sizes and choices (:class:`~model.config.TransformerConfig`).
        embedding: target token embedding ``(V, D)``.
        output: projection ``D -> V``, or None to reuse ``embedding.weight``
            (tied embeddings).

    Shapes:
        ``tgt`` ``(B, T)`` token ids, ``enc_outputs`` ``(B, S, D)``,
        ``enc_valid_lens`` ``(B,)`` -> logits ``(B, T, V)``.

    Source: Vaswani et al. 2017, §3.1 and §3.4; Press & Wolf 2017 (tied
    output embedding); d2l.ai §11.7.4.
    """

    def __init__(self, config: "TransformerConfig", embedding: nn.Embedding,
                 output: nn.Linear | None):
        super().__init__()
        c = config
        self.num_hiddens = c.num_hiddens
        self.embedding = embedding
        self.pos_encoding = PositionalEncoding(c.num_hiddens, c.dropout, c.max_len)
        self.blks = nn.ModuleList(
            TransformerDecoderBlock(c.num_hiddens, c.ffn_num_hiddens, c.num_heads, c.dropout,
                                    c.attention, c.norm_first,
                                    attention_dropout=c.attention_dropout,
                                    activation_dropout=c.activation_dropout)
            for _ in range(c.num_dec_blks))
        self.final_ln = nn.LayerNorm(c.num_hiddens) if c.norm_first else nn.Identity()
        self.output = output

    def forward(self, tgt: torch.Tensor, enc_outputs: torch.Tensor,
                enc_valid_lens: torch.Tensor | None,
                cache: DecoderCache | None = None,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for ``tgt`` ``(B, T)``: the whole prefix, or with ``cache`` only
        the positions after ``cache.length`` (the cache is updated).

        ``output_mask`` ``(B, T)`` bool (True = wanted): only those positions
        go through the final LayerNorm and the ``D -> V`` output layer, and
        the logits come back as ``(N, V)``, N = ``output_mask.sum()``, in
        row-major order (what the training loss needs: padding positions
        skip the largest matrix product of a step)."""
        offset = cache.length if cache is not None else 0
        X = self.pos_encoding(self.embedding(tgt) * self.num_hiddens ** 0.5, offset)  # (B, T, D)
        for i, blk in enumerate(self.blks):
            X = blk(X, enc_outputs, enc_valid_lens,
                    cache.layers[i] if cache is not None else None, offset)
        if cache is not None:
            cache.length += tgt.shape[1]
        if output_mask is not None:
            X = X[output_mask]  # (N, D)
        X = self.final_ln(X)
        if self.output is None:
            return X @ self.embedding.weight.T  # (B, T, V) or (N, V)
        return self.output(X)  # (B, T, V) or (N, V)
