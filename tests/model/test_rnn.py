"""Tests for the GRU encoder–decoder with additive attention (model/rnn.py) and
the architecture switch (model/build.py, TranslationModule, TranslationCLI).

References: ``nn.GRU`` run on each sentence alone without padding (encoder
outputs and the final hidden state the initial decoder state is made from);
a hand-written decoder step from ``nn.GRUCell`` with copied weights and the
additive-attention formula; decoding the whole prefix at once (for cached
incremental decoding); greedy decoding (for beam search with beam 1).
Models are tiny (D=16, V=40) and run in eval mode with dropout 0.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.testing import assert_close

from data.datamodule import TranslationDataModule
from model.attention import masked_softmax
from model.build import build_model, config_from_dict
from model.config import TransformerConfig
from model.decoding import beam_search, greedy_decode
from model.rnn import RNNConfig, RNNDecoderCache, RNNEncoderDecoder
from model.transformer import Transformer
from training.module import TranslationModule

REPO = Path(__file__).resolve().parents[2]
PAD, BOS, EOS = 0, 1, 2
V, D = 40, 16
SRC_VALID_LEN = torch.tensor([7, 4, 1, 5])  # B=4 sources of S=7 positions, ragged padding

shapes = pytest.mark.parametrize("bidirectional, num_layers", [(True, 1), (True, 2), (False, 2)],
                                 ids=["bi_1layer", "bi_2layers", "uni_2layers"])


def make_config(**overrides) -> RNNConfig:
    sizes = dict(vocab_size=V, num_hiddens=D, num_layers=2, dropout=0.0, max_len=32, pad_id=PAD)
    return RNNConfig(**{**sizes, **overrides})


def make_model(**overrides) -> RNNEncoderDecoder:
    return RNNEncoderDecoder(make_config(**overrides)).eval()


def random_tokens(*shape: int) -> torch.Tensor:
    """Ordinary (non-special) token ids."""
    return torch.randint(3, V, shape)


def padded_source(valid_len: torch.Tensor = SRC_VALID_LEN, S: int = 7) -> torch.Tensor:
    src = random_tokens(len(valid_len), S)
    src[torch.arange(S) >= valid_len[:, None]] = PAD
    return src


# ------------------------------------------------------------------ encoder
@shapes
def test_encoder_matches_gru_on_each_sentence_alone(bidirectional, num_layers):
    """Batched, padded encoding equals nn.GRU on each unpadded sentence; padded
    positions are zero and their tokens change nothing (the backward direction
    starts at the last valid token)."""
    model = make_model(bidirectional=bidirectional, num_layers=num_layers)
    src = padded_source()
    outputs = model.encode(src, SRC_VALID_LEN)  # (B, S, D)
    assert outputs.shape == (4, 7, D)
    for b, n in enumerate(SRC_VALID_LEN.tolist()):
        alone, _ = model.encoder.rnn(model.src_embedding(src[b: b + 1, :n]))  # (1, n, D)
        assert_close(outputs[b: b + 1, :n], alone, rtol=1e-5, atol=1e-6)
        assert torch.all(outputs[b, n:] == 0)
    garbage = torch.where(src == PAD, random_tokens(*src.shape), src)
    assert_close(model.encode(garbage, SRC_VALID_LEN), outputs, rtol=0, atol=0)
    longer = torch.cat([src, torch.full((4, 3), PAD)], dim=1)  # more padding
    assert_close(model.encode(longer, SRC_VALID_LEN)[:, :7], outputs, rtol=1e-6, atol=1e-7)


@shapes
def test_initial_state_is_projected_final_gru_state(bidirectional, num_layers):
    """s_0 = tanh(W_s h): h is the top layer's final state of each direction
    (nn.GRU's h_n on the unpadded sentence)."""
    model = make_model(bidirectional=bidirectional, num_layers=num_layers)
    src = padded_source()
    state = model.decoder.begin_state(model.encode(src, SRC_VALID_LEN), SRC_VALID_LEN)
    assert state.shape == (num_layers, 4, D)
    for b, n in enumerate(SRC_VALID_LEN.tolist()):
        _, h_n = model.encoder.rnn(model.src_embedding(src[b: b + 1, :n]))  # (L * dirs, 1, D')
        h = torch.cat([h_n[-2], h_n[-1]], dim=-1) if bidirectional else h_n[-1]  # (1, D)
        expected = torch.tanh(model.decoder.init_state(h)).reshape(num_layers, D)  # (L, D)
        assert_close(state[:, b], expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ decoder
def test_decoder_matches_handwritten_step():
    """One GRU layer, unidirectional encoder: the decoder equals the d2l.ai §11.4
    loop written out with nn.GRUCell (copied weights) and the additive score
    ``w_v^T tanh(W_q s_{t-1} + W_k h_j)``."""
    model = make_model(num_layers=1, bidirectional=False, tie_embeddings=False)
    dec = model.decoder
    cell = nn.GRUCell(2 * D, D)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).data.copy_(getattr(dec.rnn, f"{name}_l0").data)
    src, tgt = padded_source(), random_tokens(4, 5)
    enc = model.encode(src, SRC_VALID_LEN)  # (B, S, D)
    logits = model.decode(tgt, enc, SRC_VALID_LEN)  # (B, T, V)

    att = dec.attention
    s = dec.begin_state(enc, SRC_VALID_LEN)[0]  # (B, D)
    for t in range(tgt.shape[1]):
        scores = att.w_v(torch.tanh(att.W_q(s)[:, None] + att.W_k(enc))).squeeze(-1)  # (B, S)
        weights = masked_softmax(scores[:, None], SRC_VALID_LEN)  # (B, 1, S)
        context = (weights @ enc)[:, 0]  # (B, D)
        e = model.tgt_embedding(tgt[:, t])  # (B, D)
        s = cell(torch.cat([context, e], dim=-1), s)  # (B, D)
        out = dec.output(torch.tanh(dec.pre_output(torch.cat([s, context, e], dim=-1))))
        assert_close(logits[:, t], out, rtol=1e-5, atol=1e-5)


@shapes
def test_logits_do_not_depend_on_later_target_tokens(bidirectional, num_layers):
    model = make_model(bidirectional=bidirectional, num_layers=num_layers)
    src, tgt = padded_source(), random_tokens(4, 6)
    enc = model.encode(src, SRC_VALID_LEN)
    changed = tgt.clone()
    changed[:, 3:] = random_tokens(4, 3)
    assert_close(model.decode(changed, enc, SRC_VALID_LEN)[:, :3],
                 model.decode(tgt, enc, SRC_VALID_LEN)[:, :3], rtol=0, atol=0)


@shapes
def test_source_padding_changes_no_logit(bidirectional, num_layers):
    model = make_model(bidirectional=bidirectional, num_layers=num_layers)
    src, tgt = padded_source(), random_tokens(4, 6)
    garbage = torch.where(src == PAD, random_tokens(*src.shape), src)
    assert_close(model(garbage, SRC_VALID_LEN, tgt), model(src, SRC_VALID_LEN, tgt),
                 rtol=0, atol=0)


@shapes
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("chunks", [[1] * 6, [2, 1, 3], [6]], ids=["one_by_one", "mixed", "all"])
def test_cached_decoding_matches_full_prefix(bidirectional, num_layers, tie, chunks):
    """Feeding the target in pieces through the cache gives the logits of
    decoding the whole prefix at once (the training-time path)."""
    model = make_model(bidirectional=bidirectional, num_layers=num_layers, tie_embeddings=tie)
    src, tgt = padded_source(), random_tokens(4, sum(chunks))
    enc = model.encode(src, SRC_VALID_LEN)
    expected = model.decode(tgt, enc, SRC_VALID_LEN)  # (B, T, V)
    cache, pieces, start = model.init_cache(), [], 0
    for size in chunks:
        pieces.append(model.decode(tgt[:, start:start + size], enc, SRC_VALID_LEN, cache))
        start += size
    assert cache.length == tgt.shape[1]
    assert cache.hidden.shape == (num_layers, 4, D)
    assert_close(torch.cat(pieces, dim=1), expected, rtol=1e-5, atol=1e-5)


def test_cache_reorder_selects_rows():
    model = make_model()
    enc = model.encode(padded_source(), SRC_VALID_LEN)
    cache = model.init_cache()
    assert isinstance(cache, RNNDecoderCache) and cache.hidden is None and cache.length == 0
    cache.reorder(torch.tensor([0, 0]))  # empty cache: nothing to reorder
    model.decode(random_tokens(4, 2), enc, SRC_VALID_LEN, cache)
    before, keys, index = cache.hidden.clone(), cache.keys.clone(), torch.tensor([2, 0, 0, 3])
    cache.reorder(index)
    assert torch.equal(cache.hidden, before[:, index])
    assert torch.equal(cache.keys, keys[index])


@pytest.mark.parametrize("cached", [False, True], ids=["prefix", "cached"])
def test_decoder_projects_encoder_keys_once(cached):
    """``W_k enc_outputs`` is computed once per sentence: once for a whole prefix,
    once for all the steps of an incremental decoding, not once per step."""
    model = make_model()
    enc = model.encode(padded_source(), SRC_VALID_LEN)
    calls = []
    model.decoder.attention.W_k.register_forward_hook(lambda *args: calls.append(1))
    tgt = random_tokens(4, 5)
    if cached:
        cache = model.init_cache()
        for t in range(5):
            model.decode(tgt[:, t:t + 1], enc, SRC_VALID_LEN, cache)
    else:
        model.decode(tgt, enc, SRC_VALID_LEN)
    assert len(calls) == 1


def test_attention_weights_kept_on_request():
    model = make_model()
    src, tgt = padded_source(), random_tokens(4, 5)
    model.decode(tgt, model.encode(src, SRC_VALID_LEN), SRC_VALID_LEN)
    assert model.decoder.attention_weights is None  # dropped by default
    model.keep_attention_weights(True)
    model.decode(tgt, model.encode(src, SRC_VALID_LEN), SRC_VALID_LEN)
    weights = model.decoder.attention_weights  # (B, T, S)
    assert weights.shape == (4, 5, 7)
    assert_close(weights.sum(-1), torch.ones(4, 5))
    assert torch.all(weights[torch.arange(7) >= SRC_VALID_LEN[:, None, None].expand(4, 5, 7)]
                     == 0)


def test_tied_and_untied_embeddings():
    tied, untied = make_model(tie_embeddings=True), make_model(tie_embeddings=False)
    assert tied.src_embedding is tied.tgt_embedding and tied.decoder.output is None
    assert untied.src_embedding is not untied.tgt_embedding
    assert untied.num_parameters() - tied.num_parameters() == 2 * V * D
    assert torch.all(tied.src_embedding.weight[PAD] == 0)


# ----------------------------------------------------------------- decoding
DECODE_SRC_LEN = torch.tensor([6, 3, 8, 1])


def test_greedy_decode_cached_equals_uncached():
    model = make_model()
    src = padded_source(DECODE_SRC_LEN, S=8)
    cached = greedy_decode(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, 1.5, 2, use_cache=True)
    uncached = greedy_decode(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, 1.5, 2, use_cache=False)
    assert torch.equal(cached, uncached)


def test_beam_one_is_greedy_and_beams_rank_by_score():
    model = make_model()
    src = padded_source(DECODE_SRC_LEN, S=8)
    greedy = greedy_decode(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, 1.5, 2)
    beam1 = beam_search(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, beam_size=1,
                        max_len_a=1.5, max_len_b=2)
    L = min(greedy.shape[1], beam1.tokens.shape[2])
    assert torch.equal(beam1.tokens[:, 0, :L], greedy[:, :L])
    assert torch.all(greedy[:, L:] == PAD) and torch.all(beam1.tokens[:, 0, L:] == PAD)
    beam = beam_search(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, beam_size=3, nbest=3,
                       max_len_a=1.5, max_len_b=2)
    uncached = beam_search(model, src, DECODE_SRC_LEN, BOS, EOS, PAD, beam_size=3, nbest=3,
                           max_len_a=1.5, max_len_b=2, use_cache=False)
    assert torch.equal(beam.tokens, uncached.tokens)
    assert torch.all(beam.scores[:, :-1] >= beam.scores[:, 1:])


# ------------------------------------------------------------------ config
def test_config_defaults_round_trip_and_build():
    config = RNNConfig()
    assert config_from_dict(config.to_dict()) == config
    assert isinstance(build_model(config), RNNEncoderDecoder)
    assert isinstance(build_model(config.to_dict()), RNNEncoderDecoder)
    small = TransformerConfig(vocab_size=V, num_hiddens=D, ffn_num_hiddens=32, num_heads=2,
                              num_enc_blks=1, num_dec_blks=1)
    assert isinstance(build_model(small), Transformer)
    legacy = {k: v for k, v in small.to_dict().items() if k != "arch"}  # saved before `arch`
    assert config_from_dict(legacy) == small


BAD_CONFIGS = [
    *[(dict([(name, value)]), f"{name}={value}")
      for name in ("vocab_size", "num_hiddens", "num_layers", "max_len") for value in (0, -2)],
    (dict(dropout=1.0), "dropout=1.0"),
    (dict(attention_dropout=-0.1), "attention_dropout=-0.1"),
    (dict(num_hiddens=15), "num_hiddens=15"),
    (dict(arch="transformer"), "arch='rnn'"),
]


@pytest.mark.parametrize("overrides, key", BAD_CONFIGS, ids=[key for _, key in BAD_CONFIGS])
def test_config_rejects_bad_values_naming_the_key(overrides, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        make_config(**overrides)


def test_unknown_arch_and_field_are_named():
    with pytest.raises(ValueError, match="arch='lstm' is unknown"):
        config_from_dict({"arch": "lstm"})
    with pytest.raises(ValueError, match="RNNConfig"):
        config_from_dict({"arch": "rnn", "num_heads": 4})
    with pytest.raises(ValueError, match="not a model config"):
        build_model(object())


# ----------------------------------------------------------------- training
def copy_task_batch(batch_size: int = 16, length: int = 6) -> dict[str, torch.Tensor]:
    """Target = source: a task a tiny attention model learns in tens of steps."""
    tokens = random_tokens(batch_size, length)
    src = torch.cat([tokens, torch.full((batch_size, 1), EOS)], dim=1)
    return {"src": src, "src_valid_len": torch.full((batch_size,), length + 1),
            "tgt_in": torch.cat([torch.full((batch_size, 1), BOS), tokens], dim=1),
            "labels": torch.cat([tokens, torch.full((batch_size, 1), EOS)], dim=1),
            "tgt_valid_len": torch.full((batch_size,), length + 1)}


@pytest.mark.slow
def test_rnn_trains_with_the_translation_module():
    """The LightningModule builds the RNN from an RNNConfig, saves it with its
    arch as hparams["config"] (what load_translator and load_from_checkpoint
    read), and its loss falls within a few AdamW steps."""
    module = TranslationModule(rnn=make_config(num_hiddens=32, num_layers=1, dropout=0.1),
                               lr=0.01, warmup_steps=1, label_smoothing=0.0)
    assert isinstance(module.model, RNNEncoderDecoder)
    assert module.hparams["config"]["arch"] == "rnn"
    assert TranslationModule(module.hparams["config"]).config == module.config  # from a dict
    assert TranslationModule(rnn=module.config.to_dict()).config == module.config
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    batches = [copy_task_batch() for _ in range(4)]
    losses = []
    for step in range(40):
        loss, _ = module.loss(batches[step % 4])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 1.0, losses


@pytest.mark.slow
def test_rnn_under_bf16_autocast():
    """The GRUs run in their weights' dtype under autocast (the configs train
    with precision bf16-mixed); logits come out and gradients reach every weight."""
    model = make_model().train()
    batch = copy_task_batch(4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch["src"], batch["src_valid_len"], batch["tgt_in"])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten())
    loss.backward()
    assert logits.shape == (4, 6, V)
    assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def cli_class():
    """``TranslationCLI`` (:mod:`training.cli`), as ``scripts/train.py`` runs it."""
    from training.cli import TranslationCLI

    return TranslationCLI


def parse(cli_class, tmp_path, monkeypatch, *args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    return cli_class(TranslationModule, TranslationDataModule, args=list(args), run=False)


def test_cli_picks_the_architecture_and_merges_overrides(cli_class, tmp_path, monkeypatch):
    """A ``model.rnn`` block selects the RNN; later YAML files and command-line
    keys override single fields without losing the others."""
    rnn_yaml = REPO / "configs" / "compare_rnn.yaml"
    raw = yaml.safe_load(rnn_yaml.read_text())["model"]["rnn"]
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"model": {"rnn": {"num_layers": 1}}}))
    cli = parse(cli_class, tmp_path, monkeypatch, "--config", str(rnn_yaml),
                "--config", str(override), "--model.rnn.num_hiddens", "64")
    assert isinstance(cli.model.model, RNNEncoderDecoder)
    expected = {**raw, "num_layers": 1, "num_hiddens": 64, "arch": "rnn"}
    assert {k: getattr(cli.model.config, k) for k in expected} == expected
    assert cli.model.hparams["config"]["arch"] == "rnn"

    dot_yaml = REPO / "configs" / "compare_transformer_dot.yaml"
    cli = parse(cli_class, tmp_path, monkeypatch, "--config", str(dot_yaml),
                "--model.config.attention", "additive", "--model.config.num_hiddens", "64")
    assert isinstance(cli.model.model, Transformer)
    assert (cli.model.config.attention, cli.model.config.num_hiddens) == ("additive", 64)
    assert cli.model.config.num_enc_blks == yaml.safe_load(dot_yaml.read_text())["model"][
        "config"]["num_enc_blks"]


def test_config_and_rnn_together_are_refused():
    with pytest.raises(ValueError, match="both config .* and rnn"):
        TranslationModule(TransformerConfig(), rnn=RNNConfig())


def test_output_mask_gives_the_selected_rows_of_the_full_logits():
    torch.manual_seed(0)
    model = make_model()
    src = torch.randint(3, 40, (3, 7))
    valid = torch.tensor([7, 4, 2])
    tgt = torch.randint(3, 40, (3, 5))
    mask = torch.rand(3, 5) < 0.6
    full = model(src, valid, tgt)
    assert torch.allclose(model(src, valid, tgt, output_mask=mask), full[mask], atol=1e-6)
