"""The reference Transformer the training benchmark compares ours against:
``torch.nn.Transformer`` with our sizes, tied embedding, sinusoidal positions,
dropouts and LayerNorm placement, started from a copy of our weights, and the
matrix-multiply FLOP count of a training step.

Used by ``scripts/benchmark_train.py`` (through :mod:`benchmarks.train_benchmark`);
``tests/benchmarks/test_benchmark_train.py`` checks that it computes our function.

Source: ``torch.nn.Transformer`` (PyTorch); Vaswani et al. 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import TransformerConfig
from model.transformer import Transformer

__all__ = ["ReferenceTransformer", "copy_weights", "sinusoidal_positions",
           "training_matmul_flops"]


def sinusoidal_positions(max_len: int, num_hiddens: int) -> torch.Tensor:
    """``P[t, 2i] = sin(t / 10000^(2i/D))``, ``P[t, 2i+1] = cos(...)`` -> ``(max_len, D)``."""
    positions = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    frequencies = 10000 ** (torch.arange(0, num_hiddens, 2, dtype=torch.float32) / num_hiddens)
    angles = positions / frequencies  # (max_len, ceil(D/2))
    P = torch.zeros(max_len, num_hiddens)
    P[:, 0::2] = torch.sin(angles)
    P[:, 1::2] = torch.cos(angles[:, : num_hiddens // 2])
    return P


def _unbiased_attention(c: TransformerConfig) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(c.num_hiddens, c.num_heads, dropout=c.attention_dropout,
                                 bias=False, batch_first=True)


class ReferenceTransformer(nn.Module):
    """The network of :class:`model.Transformer`, built on ``torch.nn.Transformer``.

    Same sizes, one embedding matrix shared by source, target and output
    (``padding_idx`` = ``pad_id``), embeddings scaled by ``sqrt(D)`` plus
    sinusoidal positions then dropout, pre-LN (``norm_first``, with final
    LayerNorms) or post-LN (no final LayerNorm), attention projections without
    bias, FFN with bias and ReLU, dropout ``dropout`` on residual branches,
    ``attention_dropout`` on attention weights and ``activation_dropout``
    inside the FFN. Additive attention is not supported (``nn`` has none).

    Masks (``nn`` convention, True = ignore) are made from the valid lengths:
    ``src_key_padding_mask`` = ``memory_key_padding_mask`` from
    ``src_valid_len``, ``tgt_key_padding_mask`` from ``tgt_valid_len`` (by
    default the count of non-pad ids of ``tgt_in``, which is the same thing
    for batches from ``collate_batch``), and a causal boolean ``tgt_mask``
    with ``tgt_is_causal=True``.

    Shapes:
        ``src`` ``(B, S)``, ``src_valid_len`` ``(B,)``, ``tgt_in`` ``(B, T)``,
        ``tgt_valid_len`` ``(B,)`` -> logits ``(B, T, V)``.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        if c.attention != "dot":
            raise ValueError(f"model config: attention={c.attention!r}; the nn.Transformer "
                             f"reference has dot-product attention only")
        if not c.tie_embeddings:
            raise ValueError("model config: tie_embeddings=false; the reference ties them")
        self.embedding = nn.Embedding(c.vocab_size, c.num_hiddens, padding_idx=c.pad_id)
        self.register_buffer("P", sinusoidal_positions(c.max_len, c.num_hiddens),
                             persistent=False)  # (max_len, D)
        self.dropout = nn.Dropout(c.dropout)
        layer_args = dict(d_model=c.num_hiddens, nhead=c.num_heads,
                          dim_feedforward=c.ffn_num_hiddens, dropout=c.dropout,
                          activation="relu", batch_first=True, norm_first=c.norm_first)
        enc_layer = nn.TransformerEncoderLayer(**layer_args)
        dec_layer = nn.TransformerDecoderLayer(**layer_args)
        enc_layer.self_attn = _unbiased_attention(c)
        dec_layer.self_attn = _unbiased_attention(c)
        dec_layer.multihead_attn = _unbiased_attention(c)
        for layer in (enc_layer, dec_layer):
            layer.dropout.p = c.activation_dropout  # between the FFN's two linear layers
        final_norm = (lambda: nn.LayerNorm(c.num_hiddens)) if c.norm_first else (lambda: None)
        encoder = nn.TransformerEncoder(enc_layer, c.num_enc_blks, norm=final_norm(),
                                        enable_nested_tensor=False)
        decoder = nn.TransformerDecoder(dec_layer, c.num_dec_blks, norm=final_norm())
        self.transformer = nn.Transformer(c.num_hiddens, c.num_heads, custom_encoder=encoder,
                                          custom_decoder=decoder, batch_first=True)
        nn.init.normal_(self.embedding.weight, std=c.num_hiddens ** -0.5)
        with torch.no_grad():
            self.embedding.weight[c.pad_id].zero_()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids -> ``dropout(sqrt(D) E[ids] + P[:L])`` ``(B, L, D)``."""
        X = self.embedding(ids) * self.config.num_hiddens ** 0.5  # (B, L, D)
        return self.dropout(X + self.P[: ids.shape[1]].to(X.dtype))

    def forward(self, src: torch.Tensor, src_valid_len: torch.Tensor, tgt_in: torch.Tensor,
                tgt_valid_len: torch.Tensor | None = None,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        S, T = src.shape[1], tgt_in.shape[1]
        if tgt_valid_len is None:
            tgt_valid_len = (tgt_in != self.config.pad_id).sum(dim=1)  # (B,)
        src_ignore = torch.arange(S, device=src.device) >= src_valid_len[:, None]  # (B, S)
        tgt_ignore = torch.arange(T, device=src.device) >= tgt_valid_len[:, None]  # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=src.device).triu_(1)  # (T, T)
        Y = self.transformer(self.embed(src), self.embed(tgt_in), tgt_mask=causal,
                             src_key_padding_mask=src_ignore, tgt_key_padding_mask=tgt_ignore,
                             memory_key_padding_mask=src_ignore, tgt_is_causal=True)  # (B, T, D)
        if output_mask is not None:
            Y = Y[output_mask]  # (N, D): as ours, only the wanted positions get logits
        return Y @ self.embedding.weight.T  # (B, T, V) or (N, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@torch.no_grad()
def copy_weights(ours: Transformer, ref: ReferenceTransformer) -> None:
    """Copy every weight of ``ours`` into ``ref`` (then both compute the same function)."""
    def attention(dst: nn.MultiheadAttention, src) -> None:
        dst.in_proj_weight.copy_(torch.cat([src.W_q.weight, src.W_k.weight, src.W_v.weight]))
        dst.out_proj.weight.copy_(src.W_o.weight)

    def linear_or_norm(dst: nn.Module, src: nn.Module) -> None:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)

    ref.embedding.weight.copy_(ours.src_embedding.weight)
    for blk, layer in zip(ours.encoder.blks, ref.transformer.encoder.layers, strict=True):
        attention(layer.self_attn, blk.attention)
        for dst, src in ((layer.norm1, blk.addnorm1.ln), (layer.norm2, blk.addnorm2.ln),
                         (layer.linear1, blk.ffn.dense1), (layer.linear2, blk.ffn.dense2)):
            linear_or_norm(dst, src)
    for blk, layer in zip(ours.decoder.blks, ref.transformer.decoder.layers, strict=True):
        attention(layer.self_attn, blk.attention1)
        attention(layer.multihead_attn, blk.attention2)
        for dst, src in ((layer.norm1, blk.addnorm1.ln), (layer.norm2, blk.addnorm2.ln),
                         (layer.norm3, blk.addnorm3.ln), (layer.linear1, blk.ffn.dense1),
                         (layer.linear2, blk.ffn.dense2)):
            linear_or_norm(dst, src)
    if ours.config.norm_first:
        linear_or_norm(ref.transformer.encoder.norm, ours.encoder.final_ln)
        linear_or_norm(ref.transformer.decoder.norm, ours.decoder.final_ln)


# -------------------------------------------------------------------- FLOPs
def training_matmul_flops(c: TransformerConfig, batch_size: int, src_len: int,
                          tgt_len: int) -> int:
    """Matrix-multiply FLOPs of one training step on a padded ``(B, S, T)`` batch.

    A multiply-add is 2 FLOPs. Forward, with D = ``num_hiddens``, F =
    ``ffn_num_hiddens``, V = vocabulary:

    * encoder block: ``8 B S D^2`` (Q, K, V, O projections) + ``4 B S^2 D``
      (scores ``Q K^T`` and ``weights @ V``) + ``4 B S D F`` (FFN);
    * decoder block: ``8 B T D^2 + 4 B T^2 D`` (self-attention) +
      ``4 B T D^2 + 4 B S D^2 + 4 B T S D`` (cross-attention: Q and O on the
      target, K and V on the encoder output, scores and weighted sum) +
      ``4 B T D F`` (FFN);
    * output layer: ``2 B T D V``.

    Backward costs twice the forward (a gradient for each of the two inputs
    of every product), so a step is ``3 x`` forward. Counted on the padded
    shapes the kernels process, with no discount for the causal mask;
    embeddings lookups, softmax, LayerNorm and the optimizer are not
    matmuls and are not counted.
    """
    B, S, T = batch_size, src_len, tgt_len
    D, F, V = c.num_hiddens, c.ffn_num_hiddens, c.vocab_size
    encoder = 8 * B * S * D * D + 4 * B * S * S * D + 4 * B * S * D * F
    decoder = (8 * B * T * D * D + 4 * B * T * T * D
               + 4 * B * T * D * D + 4 * B * S * D * D + 4 * B * T * S * D
               + 4 * B * T * D * F)
    forward = c.num_enc_blks * encoder + c.num_dec_blks * decoder + 2 * B * T * D * V
    return 3 * forward
