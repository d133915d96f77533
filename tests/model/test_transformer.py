"""Tests for the Transformer (model/encoder.py, decoder.py, transformer.py,
config.py, decoding.py), each against a reference or an invariance.

References: ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``
with copied weights; a one-sentence-at-a-time greedy loop for
:func:`greedy_decode`. Invariances: causality (a later target token changes no
earlier logit) and source padding (tokens beyond ``src_valid_len`` change
nothing). Models are tiny (D=16, V=50, 2 blocks) and run in eval mode with
dropout 0, so every comparison is deterministic.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from model.attention import (SCORING_FUNCTIONS, AdditiveAttention, DotProductAttention,
                             valid_mask)
from model.config import TransformerConfig
from model.decoder import TransformerDecoderBlock
from model.decoding import greedy_decode
from model.encoder import TransformerEncoderBlock
from model.transformer import Transformer

PAD, BOS, EOS = 0, 1, 2
V, D, FFN, HEADS = 50, 16, 32, 2
SRC_VALID_LEN = torch.tensor([7, 4, 1])  # B=3 sources of S=7 positions, ragged padding

attention_types = pytest.mark.parametrize("attention", SCORING_FUNCTIONS)
norm_placements = pytest.mark.parametrize("norm_first", [True, False],
                                          ids=["pre_norm", "post_norm"])




def make_config(**overrides) -> TransformerConfig:
    sizes = dict(vocab_size=V, num_hiddens=D, ffn_num_hiddens=FFN, num_heads=HEADS,
                 num_enc_blks=2, num_dec_blks=2, dropout=0.0, max_len=32, pad_id=PAD)
    return TransformerConfig(**{**sizes, **overrides})


def make_model(**overrides) -> Transformer:
    return Transformer(make_config(**overrides)).eval()


def random_tokens(*shape: int) -> torch.Tensor:
    """Ordinary (non-special) token ids."""
    return torch.randint(3, V, shape)


def padded_source(valid_len: torch.Tensor = SRC_VALID_LEN, S: int = 7) -> torch.Tensor:
    src = random_tokens(len(valid_len), S)
    src[torch.arange(S) >= valid_len[:, None]] = PAD
    return src


def different_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Other ordinary ids at every position."""
    return (tokens - 3 + torch.randint(1, V - 3, tokens.shape)) % (V - 3) + 3


# ---------------------------------------------------------------- invariances

@attention_types
@norm_placements
@pytest.mark.parametrize("keep_weights", [False, True], ids=["fast", "explicit"])
def test_logits_do_not_depend_on_later_target_tokens(attention, norm_first, keep_weights):
    model = make_model(attention=attention, norm_first=norm_first)
    model.keep_attention_weights(keep_weights)
    src, T = padded_source(), 6
    tgt = random_tokens(3, T)
    logits = model(src, SRC_VALID_LEN, tgt)
    assert logits.shape == (3, T, V)
    for t in range(T):
        changed = tgt.clone()
        changed[:, t] = different_tokens(tgt[:, t])
        other = model(src, SRC_VALID_LEN, changed)
        assert_close(other[:, :t], logits[:, :t])
        assert not torch.allclose(other[:, t], logits[:, t])  # the check can fail


@attention_types
@norm_placements
@pytest.mark.parametrize("keep_weights", [False, True], ids=["fast", "explicit"])
def test_source_padding_changes_nothing(attention, norm_first, keep_weights):
    model = make_model(attention=attention, norm_first=norm_first)
    model.keep_attention_weights(keep_weights)
    src = padded_source()
    padding = torch.arange(src.shape[1]) >= SRC_VALID_LEN[:, None]  # (B, S)
    other_src = torch.where(padding, random_tokens(*src.shape), src)
    assert not torch.equal(other_src, src)
    tgt = random_tokens(3, 5)

    enc, other_enc = model.encode(src, SRC_VALID_LEN), model.encode(other_src, SRC_VALID_LEN)
    assert_close(other_enc[~padding], enc[~padding])
    assert_close(model.decode(tgt, other_enc, SRC_VALID_LEN),
                 model.decode(tgt, enc, SRC_VALID_LEN))
    # Also equal to encoding each sentence alone, without any padding.
    for b, n in enumerate(SRC_VALID_LEN.tolist()):
        alone = model.encode(src[b:b + 1, :n], SRC_VALID_LEN[b:b + 1])
        assert_close(alone[0], enc[b, :n])


# ---------------------------------------------------------------- tied embeddings

def decoder_hidden_and_logits(model: Transformer):
    """Run a forward pass; return the decoder's final hidden states and the logits."""
    captured = []
    handle = model.decoder.final_ln.register_forward_hook(lambda m, args, out: captured.append(out))
    logits = model(padded_source(), SRC_VALID_LEN, random_tokens(3, 5))
    handle.remove()
    return captured[0], logits


@attention_types
@norm_placements
def test_tied_embeddings_share_one_matrix(attention, norm_first):
    model = make_model(attention=attention, norm_first=norm_first, tie_embeddings=True)
    embedding = model.src_embedding
    assert model.tgt_embedding is embedding
    assert model.encoder.embedding is embedding and model.decoder.embedding is embedding
    assert model.decoder.output is None
    hidden, logits = decoder_hidden_and_logits(model)
    assert_close(logits, hidden @ embedding.weight.T)
    # The shared matrix is one parameter, counted once.
    untied = make_model(attention=attention, norm_first=norm_first, tie_embeddings=False)
    assert untied.num_parameters() - model.num_parameters() == 2 * V * D
    assert sum(p is embedding.weight for p in model.parameters()) == 1


@attention_types
@norm_placements
def test_untied_embeddings_are_separate_parameters(attention, norm_first):
    model = make_model(attention=attention, norm_first=norm_first, tie_embeddings=False)
    output = model.decoder.output
    assert isinstance(output, nn.Linear) and output.weight.shape == (V, D)
    weights = [model.src_embedding.weight, model.tgt_embedding.weight, output.weight]
    assert len({w.data_ptr() for w in weights}) == 3
    hidden, logits = decoder_hidden_and_logits(model)
    assert_close(logits, output(hidden))
    for embedding in (model.src_embedding, model.tgt_embedding):
        assert torch.equal(embedding.weight[PAD], torch.zeros(D))


# ---------------------------------------------------------------- dot vs additive

def scoring_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (DotProductAttention, AdditiveAttention))}


def outside(names, prefixes) -> list[str]:
    return [n for n in names if not any(n.startswith(p + ".") or n == p for p in prefixes)]


@norm_placements
def test_additive_and_dot_differ_only_in_scoring_modules(norm_first):
    dot = make_model(attention="dot", norm_first=norm_first)
    additive = make_model(attention="additive", norm_first=norm_first)
    dot_scoring, additive_scoring = scoring_modules(dot), scoring_modules(additive)
    # Same places: encoder self-attention, decoder self- and cross-attention.
    assert list(dot_scoring) == list(additive_scoring)
    assert len(dot_scoring) == 2 + 2 * 2
    assert all(isinstance(m, DotProductAttention) for m in dot_scoring.values())
    assert all(isinstance(m, AdditiveAttention) for m in additive_scoring.values())

    def structure(model):
        modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        return ([(n, type(modules[n])) for n in outside(modules, dot_scoring)],
                [(n, params[n].shape) for n in outside(params, dot_scoring)])

    assert structure(dot) == structure(additive)
    for name, module in dot_scoring.items():
        assert list(module.parameters()) == []
        shapes = {n: p.shape for n, p in additive_scoring[name].named_parameters()}
        Dh = D // HEADS
        assert shapes == {"W_q.weight": (Dh, Dh), "W_k.weight": (Dh, Dh), "w_v.weight": (1, Dh)}


# ---------------------------------------------------------------- blocks vs torch.nn

def copy_attention(ours, ref: nn.MultiheadAttention) -> None:
    """Our W_q, W_k, W_v, W_o into ``ref``; biases we lack become zero."""
    def bias(linear):
        return torch.zeros(linear.out_features) if linear.bias is None else linear.bias

    ref.in_proj_weight.copy_(torch.cat([ours.W_q.weight, ours.W_k.weight, ours.W_v.weight]))
    ref.in_proj_bias.copy_(torch.cat([bias(ours.W_q), bias(ours.W_k), bias(ours.W_v)]))
    ref.out_proj.weight.copy_(ours.W_o.weight)
    ref.out_proj.bias.copy_(bias(ours.W_o))


def copy_ffn_and_norms(ours, ref, norms) -> None:
    ref.linear1.load_state_dict(ours.ffn.dense1.state_dict())
    ref.linear2.load_state_dict(ours.ffn.dense2.state_dict())
    for addnorm, norm in norms:
        norm.load_state_dict(addnorm.ln.state_dict())


def randomize(module: nn.Module) -> None:
    """Non-trivial values everywhere, LayerNorm and bias parameters included."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)


@norm_placements
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_encoder_block_matches_nn_transformer_encoder_layer(norm_first, bias):
    ours = TransformerEncoderBlock(D, FFN, HEADS, 0.0, norm_first=norm_first, bias=bias).eval()
    randomize(ours)
    ref = nn.TransformerEncoderLayer(D, HEADS, FFN, dropout=0.0, batch_first=True,
                                     norm_first=norm_first, bias=True).eval()
    with torch.no_grad():
        copy_attention(ours.attention, ref.self_attn)
        copy_ffn_and_norms(ours, ref, [(ours.addnorm1, ref.norm1), (ours.addnorm2, ref.norm2)])

    X = torch.randn(3, 7, D)
    valid = valid_mask(SRC_VALID_LEN, 7, 7)[:, 0]  # (B, S), True = real token
    out = ours(X, SRC_VALID_LEN)
    expected = ref(X, src_key_padding_mask=~valid)  # torch: True = ignore
    assert_close(out[valid], expected[valid])


@norm_placements
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_decoder_block_matches_nn_transformer_decoder_layer(norm_first, bias):
    ours = TransformerDecoderBlock(D, FFN, HEADS, 0.0, norm_first=norm_first, bias=bias).eval()
    randomize(ours)
    ref = nn.TransformerDecoderLayer(D, HEADS, FFN, dropout=0.0, batch_first=True,
                                     norm_first=norm_first, bias=True).eval()
    with torch.no_grad():
        copy_attention(ours.attention1, ref.self_attn)
        copy_attention(ours.attention2, ref.multihead_attn)
        copy_ffn_and_norms(ours, ref, [(ours.addnorm1, ref.norm1), (ours.addnorm2, ref.norm2),
                                       (ours.addnorm3, ref.norm3)])

    T = 5
    X, enc_outputs = torch.randn(3, T, D), torch.randn(3, 7, D)
    src_valid = valid_mask(SRC_VALID_LEN, 1, 7)[:, 0]  # (B, S)
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)  # torch: True = ignore
    expected = ref(X, enc_outputs, tgt_mask=future, memory_key_padding_mask=~src_valid)
    assert_close(ours(X, enc_outputs, SRC_VALID_LEN), expected)


# ---------------------------------------------------------------- config

def test_config_defaults_are_valid_and_round_trip():
    config = TransformerConfig()
    assert TransformerConfig(**config.to_dict()) == config


BAD_CONFIGS = [
    (dict(num_hiddens=30, num_heads=4), "num_heads=4"),
    (dict(num_hiddens=16, num_heads=3), "num_hiddens=16"),
    (dict(attention="cosine"), "attention='cosine'"),
    *[(dict([(name, value)]), f"{name}={value}")
      for name in ("vocab_size", "num_hiddens", "ffn_num_hiddens", "num_heads",
                   "num_enc_blks", "num_dec_blks", "max_len")
      for value in (0, -4)],
    (dict(dropout=1.0), "dropout=1.0"),
    (dict(attention_dropout=-0.1), "attention_dropout=-0.1"),
]


@pytest.mark.parametrize("overrides, key", BAD_CONFIGS, ids=[key for _, key in BAD_CONFIGS])
def test_config_rejects_bad_values_naming_the_key(overrides, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        make_config(**overrides)


# ---------------------------------------------------------------- greedy decoding

def reference_greedy_sentences(model: Transformer, src, src_valid_len, eos_id,
                               max_len_a, max_len_b) -> list[list[int]]:
    """Decode each sentence alone, without padding, by argmax.

    Output length (EOS included) is at most ``int(a * n + b)`` capped at
    ``max_len - 1``; a sentence still open at its last position gets EOS.
    """
    outputs = []
    for b, n in enumerate(src_valid_len.tolist()):
        limit = min(int(max_len_a * n + max_len_b), model.config.max_len - 1)
        valid_len = src_valid_len[b:b + 1]
        enc_outputs = model.encode(src[b:b + 1, :n], valid_len)
        tokens = [BOS]
        while True:
            logits = model.decode(torch.tensor([tokens]), enc_outputs, valid_len)  # (1, t, V)
            logits[..., [PAD, BOS]] = float("-inf")  # never produced by decoding
            token = int(logits[0, -1].argmax())
            if len(tokens) == limit:
                token = eos_id
            tokens.append(token)
            if token == eos_id:
                break
        outputs.append(tokens[1:])
    return outputs


def reference_greedy(model, src, src_valid_len, eos_id, max_len_a, max_len_b) -> torch.Tensor:
    """:func:`reference_greedy_sentences` padded into a batch ``(B, L)``."""
    outputs = reference_greedy_sentences(model, src, src_valid_len, eos_id, max_len_a, max_len_b)
    width = max(len(out) for out in outputs)
    return torch.tensor([out + [PAD] * (width - len(out)) for out in outputs])


DECODE_SRC_LEN = torch.tensor([8, 5, 3, 1])
# a * n + b is exact in float32 for these a, so int() agrees with greedy_decode's float32 limit.
length_limits = pytest.mark.parametrize("max_len_a, max_len_b, max_len", [
    (1.5, 2, 32), (0.5, 1, 32), (0.0, 3, 32),
    (1.5, 2, 10),  # capped by the model's max_len
])


def decoding_model(attention, norm_first, max_len):
    model = make_model(attention=attention, norm_first=norm_first, tie_embeddings=False,
                       max_len=max_len)
    with torch.no_grad():  # larger weights: less repetitive output from a random model
        for p in model.parameters():
            p.mul_(2)
    return model


@attention_types
@norm_placements
@length_limits
@pytest.mark.slow
def test_greedy_decode_matches_one_sentence_at_a_time(attention, norm_first,
                                                      max_len_a, max_len_b, max_len):
    model = decoding_model(attention, norm_first, max_len)
    src = padded_source(DECODE_SRC_LEN, S=8)
    # Without EOS every sentence runs to its limit (the -1 closing it is never
    # predicted). As EOS take the token that some sentence predicts for the
    # first time at the latest step: that sentence then stops at EOS early.
    free_run = reference_greedy_sentences(model, src, DECODE_SRC_LEN, -1,
                                          max_len_a, max_len_b)
    first_seen = [(step, token) for out in free_run for step, token in enumerate(out[:-1])
                  if token not in (PAD, BOS) and token not in out[:step]]
    assert first_seen, "the random model predicted only special tokens"
    eos_id = max(first_seen)[1]

    out = greedy_decode(model, src, DECODE_SRC_LEN, BOS, eos_id, PAD, max_len_a, max_len_b)
    expected = reference_greedy(model, src, DECODE_SRC_LEN, eos_id, max_len_a, max_len_b)
    assert torch.equal(out, expected)
    stopped_early = reference_greedy_sentences(model, src, DECODE_SRC_LEN, eos_id,
                                               max_len_a, max_len_b)
    assert any(len(a) < len(b) for a, b in zip(stopped_early, free_run))


@attention_types
@norm_placements
@length_limits
@pytest.mark.slow
def test_greedy_decode_respects_length_limits(attention, norm_first,
                                              max_len_a, max_len_b, max_len):
    model = decoding_model(attention, norm_first, max_len)
    src = padded_source(DECODE_SRC_LEN, S=8)
    free_run = reference_greedy_sentences(model, src, DECODE_SRC_LEN, -1,
                                          max_len_a, max_len_b)
    predicted = {token for out in free_run for token in out}
    eos_id = min(set(range(3, V)) - predicted)  # a token the model never predicts here

    out = greedy_decode(model, src, DECODE_SRC_LEN, BOS, eos_id, PAD, max_len_a, max_len_b)
    assert torch.equal(out, reference_greedy(model, src, DECODE_SRC_LEN, eos_id,
                                             max_len_a, max_len_b))
    limits = [min(int(max_len_a * n + max_len_b), max_len - 1) for n in DECODE_SRC_LEN.tolist()]
    assert out.shape == (len(limits), max(limits))
    for row, limit in zip(out.tolist(), limits):
        # Every sentence runs to its limit, ends with EOS, then padding.
        assert row[limit - 1] == eos_id and eos_id not in row[:limit - 1]
        assert row[limit:] == [PAD] * (len(row) - limit)


# ---------------------------------------------------------------- incremental decoding

@attention_types
@norm_placements
@pytest.mark.parametrize("chunks", [[1] * 6, [2, 1, 3], [6]], ids=["one_by_one", "mixed", "all"])
def test_cached_decoding_matches_full_prefix(attention, norm_first, chunks):
    """Feeding the target in pieces through a DecoderCache gives the logits of
    decoding the whole prefix at once (reference: the training-time path)."""
    model = make_model(attention=attention, norm_first=norm_first)
    src = padded_source()
    tgt = random_tokens(len(SRC_VALID_LEN), sum(chunks))
    enc_outputs = model.encode(src, SRC_VALID_LEN)
    expected = model.decode(tgt, enc_outputs, SRC_VALID_LEN)  # (B, T, V)

    cache, pieces, start = model.init_cache(), [], 0
    for size in chunks:
        pieces.append(model.decode(tgt[:, start:start + size], enc_outputs, SRC_VALID_LEN, cache))
        start += size
    assert cache.length == tgt.shape[1]
    assert_close(torch.cat(pieces, dim=1), expected, rtol=1e-5, atol=1e-5)


@attention_types
def test_cached_greedy_decode_equals_uncached(attention):
    model = decoding_model(attention, True, 32)
    src = padded_source(DECODE_SRC_LEN, S=8)
    cached = greedy_decode(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, 1.5, 2, use_cache=True)
    uncached = greedy_decode(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, 1.5, 2, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("attention", ["dot", "additive"])
def test_cache_reorder_selects_rows(attention):
    model = make_model(attention=attention)
    src = padded_source()
    enc_outputs = model.encode(src, SRC_VALID_LEN)
    cache = model.init_cache()
    model.decode(random_tokens(3, 2), enc_outputs, SRC_VALID_LEN, cache)
    before = [{k: tuple(t.clone() for t in ts) for k, ts in layer.items()}
              for layer in cache.layers]
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    for layer, old in zip(cache.layers, before):
        for name, tensors in layer.items():
            assert len(tensors) == (3 if attention == "additive" else 2)
            assert all(torch.equal(t, o[index]) for t, o in zip(tensors, old[name]))


def test_additive_cache_projects_each_key_once(monkeypatch):
    """Incremental decoding with additive scoring keeps W_k of the keys: after the
    first step only the new position's self-attention key is projected (the
    encoder's keys and earlier positions are not), and the logits equal the
    uncached decoder's."""
    model = make_model(attention="additive")
    src = padded_source()
    enc_outputs = model.encode(src, SRC_VALID_LEN)
    tgt = random_tokens(3, 5)
    full = model.decode(tgt, enc_outputs, SRC_VALID_LEN)
    projected = []
    original = AdditiveAttention.project_keys

    def spy(self, keys):
        projected.append(keys.shape[-2])
        return original(self, keys)

    monkeypatch.setattr(AdditiveAttention, "project_keys", spy)
    cache = model.init_cache()
    steps = [model.decode(tgt[:, t:t + 1], enc_outputs, SRC_VALID_LEN, cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    blocks = len(cache.layers)
    S = src.shape[1]
    # step 1: per block one new self key and the S encoder keys; later steps: one key per block
    assert sorted(projected[:2 * blocks]) == sorted([1, S] * blocks)
    assert projected[2 * blocks:] == [1] * (4 * blocks)


@attention_types
@pytest.mark.parametrize("tie_embeddings", [True, False], ids=["tied", "untied"])
def test_output_mask_gives_the_selected_rows_of_the_full_logits(attention, tie_embeddings):
    torch.manual_seed(0)
    model = make_model(attention=attention, tie_embeddings=tie_embeddings)
    src, tgt = padded_source(), random_tokens(3, 6)
    mask = torch.rand(3, 6) < 0.6
    full = model(src, SRC_VALID_LEN, tgt)  # (B, T, V)
    selected = model(src, SRC_VALID_LEN, tgt, output_mask=mask)  # (N, V)
    assert selected.shape == (int(mask.sum()), V)
    assert_close(selected, full[mask])
