"""Beam search (model/decoding.py) against known answers and the model's own scores.

References: a hand-built model whose next-token probabilities are a fixed
table (so the best sequence is known in advance), greedy decoding (beam 1),
the GNMT length-penalty formula, and teacher-forced log-probabilities of the
returned hypotheses recomputed with the Transformer.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.attention import SCORING_FUNCTIONS
from model.config import TransformerConfig
from model.decoding import beam_search, greedy_decode, length_penalty
from model.transformer import Transformer

PAD, BOS, EOS, A, B, C = 0, 1, 2, 3, 4, 5
VOCAB = 6


class TableCache:
    """Stand-in for DecoderCache: remembers each row's prefix; reorder() follows beams."""

    def __init__(self):
        self.tokens: torch.Tensor | None = None

    def reorder(self, index: torch.Tensor) -> None:
        self.tokens = self.tokens.index_select(0, index)


class TableModel(nn.Module):
    """Next-token probabilities looked up from ``table[source_id][prefix]``.

    The source's first token picks the table, so one batch can hold sentences
    with different answers. Unlisted prefixes end with certainty (EOS).
    """

    def __init__(self, tables: dict[int, dict[tuple[int, ...], dict[int, float]]]):
        super().__init__()
        self.tables = tables

    def encode(self, src, src_valid_len):
        return src[:, :1].float().unsqueeze(-1)  # (B, 1, 1): the table id

    def init_cache(self):
        return TableCache()

    def decode(self, tgt_in, enc_outputs, src_valid_len, cache=None):
        if cache is not None:
            cache.tokens = tgt_in if cache.tokens is None else torch.cat([cache.tokens, tgt_in], 1)
            prefixes = cache.tokens
        else:
            prefixes = tgt_in
        logits = torch.full((tgt_in.shape[0], tgt_in.shape[1], VOCAB), -1e9)
        offset = prefixes.shape[1] - tgt_in.shape[1]
        for row in range(tgt_in.shape[0]):
            table = self.tables[int(enc_outputs[row, 0, 0])]
            for t in range(tgt_in.shape[1]):
                prefix = tuple(prefixes[row, 1: offset + t + 1].tolist())  # without BOS
                for token, p in table.get(prefix, {EOS: 1.0}).items():
                    logits[row, t, token] = math.log(p)
        return logits


# Greedy takes A (0.6) then EOS (0.4): P = 0.24. Beam 2 also keeps B (0.4),
# whose EOS has 0.9: P = 0.36, the best sequence.
GREEDY_TRAP = {(): {A: 0.6, B: 0.4}, (A,): {EOS: 0.4, A: 0.3, B: 0.3}, (B,): {EOS: 0.9, C: 0.1}}
# A 1-token hypothesis (EOS, P=0.5) against a 3-token one (A A EOS, P=0.5*1.0*0.9).
SHORT_OR_LONG = {(): {EOS: 0.5, A: 0.5}, (A,): {A: 1.0}, (A, A): {EOS: 0.9, A: 0.1}}


def run_table(tables, ids, **kwargs):
    src = torch.tensor([[i, 7] for i in ids])
    valid = torch.full((len(ids),), 2)
    return TableModel(tables), src, valid


def test_beam_search_finds_the_sequence_greedy_misses():
    model, src, valid = run_table({0: GREEDY_TRAP}, [0])
    greedy = greedy_decode(model, src, valid, BOS, EOS, PAD, max_len_a=0, max_len_b=5)
    assert greedy.tolist() == [[A, EOS]]
    out = beam_search(model, src, valid, BOS, EOS, PAD, beam_size=2, max_len_a=0,
                      max_len_b=5, alpha=0.0, nbest=2)
    assert out.tokens[0, 0].tolist() == [B, EOS]
    assert out.tokens[0, 1].tolist() == [A, EOS]
    assert out.scores[0].tolist() == pytest.approx([math.log(0.36), math.log(0.24)])


def test_beam_size_one_is_greedy_on_the_table():
    model, src, valid = run_table({0: GREEDY_TRAP, 1: SHORT_OR_LONG}, [0, 1])
    greedy = greedy_decode(model, src, valid, BOS, EOS, PAD, max_len_a=0, max_len_b=5)
    beam = beam_search(model, src, valid, BOS, EOS, PAD, beam_size=1, max_len_a=0, max_len_b=5)
    assert torch.equal(beam.tokens[:, 0], greedy)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_length_penalty_ranks_as_documented(alpha):
    """Ranking by log P / ((5 + |Y|) / 6) ** alpha: alpha 0 prefers the short
    hypothesis here, larger alpha the long one."""
    model, src, valid = run_table({0: SHORT_OR_LONG}, [0])
    out = beam_search(model, src, valid, BOS, EOS, PAD, beam_size=2, max_len_a=0, max_len_b=6,
                      alpha=alpha, nbest=2)
    short = math.log(0.5) / ((5 + 1) / 6) ** alpha
    long = math.log(0.5 * 1.0 * 0.9) / ((5 + 3) / 6) ** alpha
    expected = sorted([(short, [EOS]), (long, [A, A, EOS])], reverse=True)
    got = [row[row != PAD].tolist() for row in out.tokens[0]]
    assert got == [tokens for _, tokens in expected]
    assert out.scores[0].tolist() == pytest.approx([score for score, _ in expected])
    assert length_penalty(3, alpha) == pytest.approx(((5 + 3) / 6) ** alpha)
    # The two alphas the docstring promises: 0 keeps the short one, 1 the long one.
    if alpha == 0.0:
        assert got[0] == [EOS]
    if alpha >= 1.0:
        assert got[0] == [A, A, EOS]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
def test_fairseq_length_normalization_ranks_by_length_to_the_alpha(alpha):
    """``lenpen_norm="fairseq"``: log P / |Y| ** alpha (fairseq's --lenpen), which at
    alpha 1 prefers the long hypothesis here where GNMT's normalization does not."""
    model, src, valid = run_table({0: SHORT_OR_LONG}, [0])
    out = beam_search(model, src, valid, BOS, EOS, PAD, beam_size=2, max_len_a=0, max_len_b=6,
                      alpha=alpha, nbest=2, lenpen_norm="fairseq")
    short = math.log(0.5) / 1 ** alpha
    long = math.log(0.5 * 1.0 * 0.9) / 3 ** alpha
    expected = sorted([(short, [EOS]), (long, [A, A, EOS])], reverse=True)
    got = [row[row != PAD].tolist() for row in out.tokens[0]]
    assert got == [tokens for _, tokens in expected]
    assert out.scores[0].tolist() == pytest.approx([score for score, _ in expected])
    assert length_penalty(3, alpha, "fairseq") == pytest.approx(3 ** alpha)
    with pytest.raises(ValueError, match="'marian' is unknown"):
        beam_search(model, src, valid, BOS, EOS, PAD, beam_size=2, lenpen_norm="marian")


def test_commands_offer_the_model_s_length_normalizations():
    from inference.decoding import DecodingConfig
    from inference.options import LENPEN_NORMS as OPTIONS
    from model.decoding import LENPEN_NORMS

    assert OPTIONS == LENPEN_NORMS
    described = DecodingConfig(beam_size=5, alpha=1.0, lenpen_norm="fairseq").describe()
    assert described == "beam 5 lenpen 1.0 (fairseq)"
    assert DecodingConfig(beam_size=5, alpha=1.0).describe() == "beam 5 lenpen 1.0"


def test_batched_beam_search_equals_sentence_by_sentence():
    tables = {0: GREEDY_TRAP, 1: SHORT_OR_LONG}
    ids = [1, 0, 0, 1]
    model, src, valid = run_table(tables, ids)
    batched = beam_search(model, src, valid, BOS, EOS, PAD, beam_size=3, max_len_a=0,
                          max_len_b=6, nbest=3)
    for row, table_id in enumerate(ids):
        _, one_src, one_valid = run_table(tables, [table_id])
        alone = beam_search(model, one_src, one_valid, BOS, EOS, PAD, beam_size=3, max_len_a=0,
                            max_len_b=6, nbest=3)
        width = alone.tokens.shape[-1]
        assert torch.equal(batched.tokens[row, :, :width], alone.tokens[0])
        assert (batched.tokens[row, :, width:] == PAD).all()
        torch.testing.assert_close(batched.scores[row], alone.scores[0])


def test_nbest_must_not_exceed_beam():
    model, src, valid = run_table({0: GREEDY_TRAP}, [0])
    with pytest.raises(ValueError, match="nbest"):
        beam_search(model, src, valid, BOS, EOS, PAD, beam_size=2, nbest=3)


# ------------------------------------------------------------ real Transformer

def tiny_transformer(attention: str) -> Transformer:
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=40, num_hiddens=16, ffn_num_hiddens=32, num_heads=2,
                               num_enc_blks=2, num_dec_blks=2, dropout=0.0, max_len=32,
                               attention=attention, tie_embeddings=False)
    model = Transformer(config).eval()
    with torch.no_grad():  # sharper distributions than at initialisation
        for p in model.parameters():
            p.mul_(2)
    return model


SRC_LEN = torch.tensor([6, 4, 2])


def tiny_source() -> torch.Tensor:
    src = torch.randint(3, 40, (3, 6))
    src[torch.arange(6) >= SRC_LEN[:, None]] = PAD
    return src


@pytest.mark.parametrize("attention", SCORING_FUNCTIONS)
@pytest.mark.slow
def test_beam_one_equals_greedy_on_a_transformer(attention):
    model, src = tiny_transformer(attention), tiny_source()
    greedy = greedy_decode(model, src, SRC_LEN, BOS, EOS, PAD, max_len_a=1.5, max_len_b=3)
    beam = beam_search(model, src, SRC_LEN, BOS, EOS, PAD, beam_size=1, max_len_a=1.5,
                       max_len_b=3)
    width = greedy.shape[1]
    assert torch.equal(beam.tokens[:, 0, :width], greedy)


@pytest.mark.parametrize("attention", SCORING_FUNCTIONS)
def test_cached_and_uncached_beam_search_agree(attention):
    model, src = tiny_transformer(attention), tiny_source()
    kwargs = dict(beam_size=4, max_len_a=1.5, max_len_b=3, alpha=1.0, nbest=4)
    cached = beam_search(model, src, SRC_LEN, BOS, EOS, PAD, use_cache=True, **kwargs)
    uncached = beam_search(model, src, SRC_LEN, BOS, EOS, PAD, use_cache=False, **kwargs)
    assert torch.equal(cached.tokens, uncached.tokens)
    torch.testing.assert_close(cached.scores, uncached.scores)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_scores_are_the_models_normalized_log_probabilities(alpha):
    """Each returned score equals the teacher-forced log-probability of its
    tokens under the model, divided by the length penalty; n-best is sorted;
    every hypothesis ends with EOS within a * S + b tokens."""
    model, src = tiny_transformer("dot"), tiny_source()
    a, b = 1.5, 3
    out = beam_search(model, src, SRC_LEN, BOS, EOS, PAD, beam_size=4, max_len_a=a,
                      max_len_b=b, alpha=alpha, nbest=4)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()
    for row in range(src.shape[0]):
        limit = int(a * int(SRC_LEN[row]) + b)
        enc = model.encode(src[row:row + 1], SRC_LEN[row:row + 1])
        for tokens, score in zip(out.tokens[row], out.scores[row]):
            hyp = tokens[tokens != PAD]
            assert hyp[-1] == EOS and EOS not in hyp[:-1].tolist() and len(hyp) <= limit
            tgt_in = torch.cat([torch.tensor([BOS]), hyp[:-1]])[None]
            logits = model.decode(tgt_in, enc, SRC_LEN[row:row + 1])
            logits[..., [PAD, BOS]] = float("-inf")  # beam search never produces these
            log_probs = F.log_softmax(logits, -1)[0]
            total = log_probs.gather(1, hyp[:, None]).sum()
            assert float(score) == pytest.approx(float(total) / length_penalty(len(hyp), alpha),
                                                 rel=1e-4, abs=1e-5)
