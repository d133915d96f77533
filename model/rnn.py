"""The RNN encoder–decoder with additive attention ("RNNsearch").

A GRU encoder (bidirectional by default) reads the source; a GRU decoder
attends to the encoder outputs with :class:`~model.attention.AdditiveAttention`
at every step, querying with its previous top-layer hidden state, and feeds
the context concatenated with the previous target embedding to its GRU
(the design of d2l.ai §11.4). :class:`RNNEncoderDecoder` has the interface of
:class:`~model.transformer.Transformer` (``encode`` / ``decode`` /
``init_cache`` / ``config.max_len``), so the training module, greedy decoding
and beam search use it unchanged.

Source: Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly
Learning to Align and Translate" (§3, appendix A); d2l.ai §10.7
(``Seq2SeqEncoder``) and §11.4 (``Seq2SeqAttentionDecoder``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .attention import AdditiveAttention
from .dropout import Dropout
from .config import ConfigError
from .encoder_decoder import EncoderDecoder

__all__ = ["RNNConfig", "RNNDecoderCache", "Seq2SeqEncoder", "Seq2SeqAttentionDecoder",
           "RNNEncoderDecoder"]


@dataclass
class RNNConfig:
    """Sizes and choices of the GRU encoder–decoder with additive attention.

    Each field maps to one key of the ``model.rnn`` block of a YAML file in
    ``configs/`` (``configs/compare_rnn.yaml``); ``arch`` tells it from
    :class:`~model.config.TransformerConfig` in checkpoints.

    Raises:
        ValueError: on construction, if a size is not positive, a dropout is
            outside ``[0, 1)``, or ``num_hiddens`` is odd with a
            bidirectional encoder.

    Source: Bahdanau et al. 2015, appendix A.2 (n = 1000 GRU units per
    direction, 620-wide embeddings); d2l.ai §11.4.
    """

    arch: Literal["rnn"] = "rnn"
    """Architecture tag, always ``"rnn"``: saved in checkpoints so that
    ``model.build.config_from_dict`` rebuilds the right config."""
    vocab_size: int = 8000
    """V: size of the (joint source+target) vocabulary, set from the tokenizer."""
    num_hiddens: int = 256
    """D: width of the embeddings, of the encoder outputs (both directions
    together), of the decoder GRU state and of the attention hidden layer."""
    num_layers: int = 2
    """Stacked GRU layers, in the encoder and in the decoder."""
    dropout: float = 0.1
    """Dropout on the embeddings, between stacked GRU layers and before the
    output projection."""
    attention_dropout: float = 0.0
    """Dropout on the attention weights."""
    bidirectional: bool = True
    """Bidirectional encoder as in the paper: each direction ``D / 2`` wide,
    concatenated to D. A forward GRU of width D when False."""
    tie_embeddings: bool = True
    """Share source embedding, target embedding and output projection (the
    vocabulary is joint)."""
    max_len: int = 256
    """Longest output (BOS included) that decoding produces; an RNN has no
    position limit of its own, this caps greedy decoding and beam search as
    for the Transformer."""
    pad_id: int = 0
    """Padding token id (embedding row kept at zero)."""

    def __post_init__(self):
        if self.arch != "rnn":
            raise ConfigError(f"model.config: RNNConfig needs arch='rnn', got {self.arch!r}")
        for name in ("vocab_size", "num_hiddens", "num_layers", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.rnn.{name}={getattr(self, name)} must be positive")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.rnn.{name}={getattr(self, name)} must be in [0, 1)")
        if self.bidirectional and self.num_hiddens % 2:
            raise ConfigError(
                f"model.rnn.num_hiddens={self.num_hiddens} is odd, but a bidirectional "
                f"encoder splits it between two directions; use an even num_hiddens or "
                f"model.rnn.bidirectional: false")

    def to_dict(self) -> dict:
        """Plain-dict form, as stored in checkpoints."""
        return asdict(self)


class RNNDecoderCache:
    """The decoder's recurrent state between calls, for incremental decoding.

    Attributes:
        hidden: ``(L, B, D)`` GRU state after the last fed token, or None
            before the first call (the decoder then starts from its initial
            state, a function of the encoder outputs).
        keys: ``(B, S, D)`` the encoder outputs projected by the attention's
            ``W_k``, computed at the first call and reused at every step.
        length: number of target positions already fed.

    Source: d2l.ai §11.4 (the decoder ``state``); same role as
    :class:`~model.decoder.DecoderCache` for the Transformer.
    """

    def __init__(self):
        self.hidden: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` ``(B',)`` of the state (beam search)."""
        if self.hidden is not None:
            self.hidden = self.hidden.index_select(1, index)  # (L, B', D)
        if self.keys is not None:
            self.keys = self.keys.index_select(0, index)  # (B', S, D)


def _gru(config: RNNConfig, input_size: int, hidden_size: int, bidirectional: bool) -> nn.GRU:
    """A batch-first stacked GRU with dropout between its layers."""
    return nn.GRU(input_size, hidden_size, config.num_layers, batch_first=True,
                  dropout=config.dropout if config.num_layers > 1 else 0.0,
                  bidirectional=bidirectional)


class Seq2SeqEncoder(nn.Module):
    """Embedding and stacked (bi)GRU over the valid positions of each source.

    Padded positions are skipped (``pack_padded_sequence``): the backward
    direction starts at each sentence's last valid token, so padding never
    reaches a valid position, and the outputs at padded positions are zero.

    Args:
        config: sizes (:class:`RNNConfig`).
        embedding: token embedding ``(V, D)`` (shared with the decoder when tied).

    Shapes:
        ``src`` ``(B, S)`` token ids, ``valid_lens`` ``(B,)`` or None ->
        ``(B, S, D)``; with a bidirectional encoder, features ``[:D/2]`` are
        the forward direction and ``[D/2:]`` the backward one.

    Source: Bahdanau et al. 2015, §3.2 (bidirectional annotations
    ``h_j = [h→_j; h←_j]``); d2l.ai §10.7.2.
    """

    def __init__(self, config: RNNConfig, embedding: nn.Embedding):
        super().__init__()
        c = config
        self.embedding = embedding
        self.dropout = Dropout(c.dropout)
        size = c.num_hiddens // 2 if c.bidirectional else c.num_hiddens
        self.rnn = _gru(c, c.num_hiddens, size, c.bidirectional)

    def forward(self, src: torch.Tensor, valid_lens: torch.Tensor | None) -> torch.Tensor:
        X = self.dropout(self.embedding(src))  # (B, S, D)
        X = X.to(self.rnn.weight_hh_l0.dtype)  # autocast leaves the GRU in its weights' dtype
        if valid_lens is None:
            return self.rnn(X)[0]  # (B, S, D)
        S = src.shape[1]
        # A length of 0 (never produced by the data pipeline: sources end with
        # EOS) is read as 1, since packing needs at least one step.
        lengths = valid_lens.clamp(1, S).cpu()
        packed = pack_padded_sequence(X, lengths, batch_first=True, enforce_sorted=False)
        outputs, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True,
                                         total_length=S)  # (B, S, D), zero beyond valid_lens
        return outputs


class Seq2SeqAttentionDecoder(nn.Module):
    """GRU decoder that attends to the encoder outputs before every step.

    At step ``t``, with ``s_{t-1}`` the previous top-layer state:
    ``c_t = AdditiveAttention(s_{t-1}, enc_outputs, enc_outputs, valid_lens)``,
    ``s_t = GRU([c_t; e(y_{t-1})], s_{t-1})`` (d2l.ai §11.4), and the logits
    are ``W_out tanh(W_o [s_t; c_t; e(y_{t-1})])`` (the paper's deep output,
    with ``tanh`` in place of maxout). The initial state is
    ``s_0 = tanh(W_s h)``, ``h`` the encoder output that has read the whole
    source: the backward direction at position 0 concatenated with the
    forward direction at the last valid position (the forward output at the
    last valid position for a unidirectional encoder), one projection per
    decoder layer. ``s_0`` depends only on ``enc_outputs`` and
    ``valid_lens``, so decoding a whole prefix at once and one token at a
    time with a cache give the same logits.

    Args:
        config: sizes (:class:`RNNConfig`).
        embedding: target token embedding ``(V, D)``.
        output: projection ``D -> V``, or None to reuse ``embedding.weight``.

    Shapes:
        ``tgt`` ``(B, T)`` ids, ``enc_outputs`` ``(B, S, D)``, ``valid_lens``
        ``(B,)`` -> logits ``(B, T, V)``; ``attention_weights`` ``(B, T, S)``
        when kept.

    Source: Bahdanau et al. 2015, appendix A.2.2 (decoder, ``s_0 = tanh(W_s
    h←_1)``, deep output); d2l.ai §11.4.2 (``Seq2SeqAttentionDecoder``).
    """

    def __init__(self, config: RNNConfig, embedding: nn.Embedding, output: nn.Linear | None):
        super().__init__()
        c = config
        D, L = c.num_hiddens, c.num_layers
        self.num_hiddens, self.num_layers, self.bidirectional = D, L, c.bidirectional
        self.embedding = embedding
        self.dropout = Dropout(c.dropout)
        self.attention = AdditiveAttention(D, c.attention_dropout, key_size=D, query_size=D)
        self.rnn = _gru(c, 2 * D, D, bidirectional=False)
        self.init_state = nn.Linear(D, L * D)  # W_s, one D x D block per decoder layer
        self.pre_output = nn.Linear(3 * D, D)  # W_o over [s_t; c_t; e(y_{t-1})]
        self.output = output
        self.keep_weights = False
        self.attention_weights: torch.Tensor | None = None

    def begin_state(self, enc_outputs: torch.Tensor,
                    valid_lens: torch.Tensor | None) -> torch.Tensor:
        """``s_0 = tanh(W_s h)`` per layer: ``(B, S, D)``, ``(B,)`` -> ``(L, B, D)``."""
        B, S, D = enc_outputs.shape
        rows = torch.arange(B, device=enc_outputs.device)
        last = (torch.full((B,), S - 1, device=enc_outputs.device) if valid_lens is None
                else (valid_lens.to(enc_outputs.device) - 1).clamp(0, S - 1))  # (B,)
        summary = enc_outputs[rows, last]  # (B, D): forward direction has read all
        if self.bidirectional:
            # The backward direction has read the whole sentence at position 0.
            summary = torch.cat([summary[:, : D // 2], enc_outputs[:, 0, D // 2:]], dim=-1)
        state = torch.tanh(self.init_state(summary))  # (B, L * D)
        return state.reshape(B, self.num_layers, D).transpose(0, 1).contiguous()  # (L, B, D)

    def forward(self, tgt: torch.Tensor, enc_outputs: torch.Tensor,
                valid_lens: torch.Tensor | None,
                cache: RNNDecoderCache | None = None,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for ``tgt`` ``(B, T)``: the whole prefix, or with ``cache``
        only the positions after ``cache.length`` (the cache is updated);
        with ``output_mask`` ``(B, T)`` bool only the True positions, as
        ``(N, V)`` (see :meth:`TransformerDecoder.forward`)."""
        dtype = self.rnn.weight_hh_l0.dtype  # autocast leaves the GRU in its weights' dtype
        if cache is not None and cache.hidden is not None:
            state = cache.hidden
        else:
            state = self.begin_state(enc_outputs, valid_lens)
        state = state.to(dtype)  # (L, B, D)
        # W_k enc_outputs once per sentence (and once per decoding with a cache), not per step.
        keys = cache.keys if cache is not None else None
        if keys is None:
            keys = self.attention.project_keys(enc_outputs)  # (B, S, D)
            if cache is not None:
                cache.keys = keys
        embs = self.dropout(self.embedding(tgt))  # (B, T, D)
        outputs, contexts, weights = [], [], []
        for t in range(tgt.shape[1]):
            query = state[-1].unsqueeze(1)  # (B, 1, D): top layer's previous state
            context = self.attention(query, None, enc_outputs, valid_lens,
                                     projected_keys=keys)  # (B, 1, D)
            x = torch.cat([context, embs[:, t: t + 1]], dim=-1).to(dtype)  # (B, 1, 2D)
            out, state = self.rnn(x, state)  # (B, 1, D), (L, B, D)
            outputs.append(out)
            contexts.append(context)
            if self.keep_weights:
                weights.append(self.attention.attention_weights)  # (B, 1, S)
        if cache is not None:
            cache.hidden = state
            cache.length += tgt.shape[1]
        self.attention_weights = torch.cat(weights, dim=1) if weights else None  # (B, T, S)
        features = torch.cat([torch.cat(outputs, dim=1), torch.cat(contexts, dim=1).to(dtype),
                              embs.to(dtype)], dim=-1)  # (B, T, 3D)
        if output_mask is not None:
            features = features[output_mask]  # (N, 3D)
        X = self.dropout(torch.tanh(self.pre_output(features)))  # (B, T, D) or (N, D)
        if self.output is None:
            return X @ self.embedding.weight.T  # (B, T, V) or (N, V)
        return self.output(X)  # (B, T, V) or (N, V)


class RNNEncoderDecoder(EncoderDecoder):
    """GRU encoder–decoder with additive attention (Bahdanau's RNNsearch).

    Same interface as :class:`~model.transformer.Transformer`: ``encode`` and
    ``decode`` are shared by training (``forward``) and every decoding
    algorithm; :meth:`init_cache` gives the recurrent state carried between
    incremental decoding steps. Plain PyTorch.

    Args:
        config: every size and choice; see :class:`RNNConfig`.

    Shapes:
        ``src`` ``(B, S)`` token ids, ``src_valid_len`` ``(B,)``,
        ``tgt_in`` ``(B, T)`` decoder input (BOS + target) -> logits
        ``(B, T, V)``.

    Source: Bahdanau et al. 2015; d2l.ai §11.4 (``Seq2SeqAttentionDecoder``
    in an ``EncoderDecoder``).
    """

    def __init__(self, config: RNNConfig):
        super().__init__(config)
        self.encoder = Seq2SeqEncoder(config, self.src_embedding)
        self.decoder = Seq2SeqAttentionDecoder(config, self.tgt_embedding, self.output_layer())
        self.reset_parameters()
        self.keep_attention_weights(False)

    def reset_parameters(self) -> None:
        """``N(0, D^-1/2)`` embeddings (as the Transformer) with a zero padding
        row; PyTorch's default initialization for the GRUs and linear layers."""
        self.reset_embeddings()

    def init_cache(self) -> RNNDecoderCache:
        """An empty decoder state for incremental decoding."""
        return RNNDecoderCache()
