"""Property-based tests (``hypothesis``) of masking, batching and the tokenizer.

Each property is checked against a reference computed here independently:
``torch.softmax`` over each row's valid prefix for :func:`masked_softmax`;
the generated id sequences for the batch sampler and ``collate_batch``;
``unicodedata.normalize`` plus whitespace collapsing for SentencePiece's round
trip. Runs are derandomized and write no example database, so they are
reproducible and leave no files behind.
"""

from __future__ import annotations

import gzip
import itertools
import math
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentencepiece import sentencepiece_model_pb2
from torch.utils.data import DataLoader

from data.batching import ParallelDataset, TokenBudgetBatchSampler, collate_batch
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_tokenizer
from model.attention import masked_softmax

PROPERTY = settings(derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------ masked_softmax
@st.composite
def scores_and_valid_lens(draw):
    """Scores ``(B, Q, K)`` or ``(B, H, Q, K)`` and valid lengths that are None,
    ``(B,)`` or ``(B, Q)`` with values in ``0..K``."""
    B, Q, K = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    heads = draw(st.sampled_from([None, 1, 2, 3]))
    shape = (B, Q, K) if heads is None else (B, heads, Q, K)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    values = draw(st.lists(st.floats(-30, 30), min_size=math.prod(shape),
                           max_size=math.prod(shape)))
    X = torch.tensor(values, dtype=dtype).reshape(shape)
    kind = draw(st.sampled_from(["none", "per_sequence", "per_query"]))
    if kind == "none":
        return X, None
    lens_shape = (B,) if kind == "per_sequence" else (B, Q)
    lens = draw(st.lists(st.integers(0, K), min_size=math.prod(lens_shape),
                         max_size=math.prod(lens_shape)))
    lens_dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    return X, torch.tensor(lens, dtype=lens_dtype).reshape(lens_shape)


def row_valid_len(valid_lens: torch.Tensor | None, index: tuple[int, ...], K: int) -> int:
    """The valid length of the score row ``X[index]`` (index over all but the key axis)."""
    if valid_lens is None:
        return K
    b, q = index[0], index[-1]
    return int(valid_lens[b]) if valid_lens.dim() == 1 else int(valid_lens[b, q])


@settings(PROPERTY, max_examples=300)
@given(scores_and_valid_lens(), st.data())
@pytest.mark.slow
def test_masked_softmax_matches_softmax_of_valid_prefix(case, data):
    """Per row with valid length n: weights equal ``torch.softmax`` of the first n
    scores (so they sum to 1), are exactly 0 from key n on (all 0 for n = 0),
    and do not change when the scores at keys >= n are replaced by huge,
    infinite or NaN values."""
    X, valid_lens = case
    K = X.shape[-1]
    weights = masked_softmax(X, valid_lens)
    assert weights.shape == X.shape and weights.dtype == X.dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if X.dtype == torch.float32 else \
        {"rtol": 1e-12, "atol": 1e-14}
    valid = torch.zeros(X.shape, dtype=torch.bool)
    for index in itertools.product(*(range(n) for n in X.shape[:-1])):
        n = row_valid_len(valid_lens, index, K)
        valid[index][:n] = True
        row = weights[index]
        assert torch.equal(row[n:], torch.zeros(K - n, dtype=X.dtype))
        if n > 0:
            reference = torch.softmax(X[index][:n].double(), dim=0).to(X.dtype)
            torch.testing.assert_close(row[:n], reference, **tol)
            assert row[:n].sum().item() == pytest.approx(1.0, abs=1e-5)

    junk = data.draw(st.lists(st.one_of(st.floats(-1e30, 1e30),
                                        st.sampled_from([math.inf, -math.inf, math.nan])),
                              min_size=X.numel(), max_size=X.numel()))
    padded = torch.where(valid, X, torch.tensor(junk, dtype=X.dtype).reshape(X.shape))
    assert torch.equal(masked_softmax(padded, valid_lens), weights)


# ------------------------------------------------------------------ batching
@st.composite
def parallel_data(draw):
    """Random source/target id sequences (lengths 1..40, N up to 300) and a
    sampler configuration whose budget is at least the longest pair."""
    n = draw(st.integers(1, 300))
    src_lens = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
    tgt_lens = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    src = [rng.integers(4, 1000, size=k).astype(np.int32) for k in src_lens]
    tgt = [rng.integers(4, 1000, size=k).astype(np.int32) for k in tgt_lens]
    longest = max(max(src_lens), max(tgt_lens) + 1)  # targets are batched with EOS
    config = {"max_tokens": longest + draw(st.integers(0, 400)),
              "shuffle": draw(st.booleans()), "seed": draw(st.integers(0, 2**16)),
              "num_replicas": draw(st.integers(1, 3))}
    return src, tgt, config, draw(st.integers(0, 5))


def check_collated(batch: dict[str, torch.Tensor], src: list[np.ndarray],
                   tgt: list[np.ndarray], max_tokens: int) -> None:
    """A padded batch against the original sequences of its indices."""
    B, S = batch["src"].shape
    T = batch["tgt_in"].shape[1]
    assert B * max(S, T) <= max_tokens
    assert batch["labels"].shape == (B, T)
    for row, i in enumerate(batch["index"].tolist()):
        s, t = src[i].tolist(), tgt[i].tolist()
        assert batch["src_valid_len"][row].item() == len(s)
        assert batch["tgt_valid_len"][row].item() == len(t) + 1
        assert batch["src"][row].tolist() == s + [PAD_ID] * (S - len(s))
        assert batch["tgt_in"][row].tolist() == [BOS_ID] + t + [PAD_ID] * (T - len(t) - 1)
        assert batch["labels"][row].tolist() == t + [EOS_ID] + [PAD_ID] * (T - len(t) - 1)


@settings(PROPERTY, max_examples=60,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(parallel_data())
@pytest.mark.slow
def test_batches_cover_the_epoch_within_budget(case):
    """Every index once per epoch (with replicas: at least once, repeats only from
    padding the batch count to a multiple of ``num_replicas``), every batch's
    ``B * max(S, T)`` within ``max_tokens``, and collated batches that hold the
    original sequences, their lengths, BOS/EOS and PAD."""
    src, tgt, config, epoch = case
    n, replicas = len(src), config.pop("num_replicas")
    ds = ParallelDataset(src, tgt)
    lens = np.maximum([len(s) for s in src], [len(t) + 1 for t in tgt])

    single = TokenBudgetBatchSampler(ds.src_lens(), ds.tgt_lens(), **config)
    single.set_epoch(epoch)
    single_batches = list(single)
    assert len(single) == len(single_batches)
    assert list(single) == single_batches  # same epoch, same batches
    if replicas == 1:
        assert sorted(i for b in single_batches for i in b) == list(range(n))
        per_rank = [single_batches]
        samplers = [single]
    else:
        samplers = [TokenBudgetBatchSampler(ds.src_lens(), ds.tgt_lens(), **config,
                                            num_replicas=replicas, rank=r)
                    for r in range(replicas)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        per_rank = [list(sampler) for sampler in samplers]
        per_replica = -(-len(single_batches) // replicas)
        assert all(len(batches) == per_replica for batches in per_rank)
        assert {i for batches in per_rank for b in batches for i in b} == set(range(n))
        # The ranks hold every single-process batch; the extra ones are repeats of
        # such batches, as many as pad the count to a multiple of num_replicas.
        together = Counter(tuple(b) for batches in per_rank for b in batches)
        expected = Counter(tuple(b) for b in single_batches)
        assert not expected - together
        extra = together - expected
        assert sum(extra.values()) == per_replica * replicas - len(single_batches) < replicas
        assert set(extra) <= set(expected)

    for batches in per_rank:
        for b in batches:
            assert len(b) * lens[b].max() <= config["max_tokens"]
    for sampler in samplers:
        for batch in DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch):
            check_collated(batch, src, tgt, config["max_tokens"])


# ----------------------------------------------------------------- tokenizer
SEPARATORS = ["", " ", "  ", "\t", "\u00a0", "\u2009", "\u3000"]


@pytest.fixture(scope="module")
def train_text(multi30k_small) -> list[str]:
    """The 800 Multi30k training sentences (en + de) the tokenizer is trained on."""
    lines = []
    for lang in ("en", "de"):
        with gzip.open(Path(multi30k_small) / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            lines += [line.rstrip("\n") for line in f]
    return lines


@pytest.fixture(scope="module")
def tokenizer(train_text):
    return train_tokenizer(train_text, vocab_size=400, num_threads=1)


def test_tokenizer_normalisation_is_nmt_nfkc(tokenizer):
    """What the round-trip reference below assumes: SentencePiece's default
    ``nmt_nfkc`` rule (NFKC, plus control characters dropped and a few special
    spaces mapped to " "), extra whitespace removed, no byte fallback."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.model_proto)
    spec = proto.normalizer_spec
    assert spec.name == "nmt_nfkc"
    assert spec.remove_extra_whitespaces and spec.add_dummy_prefix
    assert proto.denormalizer_spec.name == ""
    assert not proto.trainer_spec.byte_fallback


@st.composite
def word_slices(draw, sentences: list[str]) -> str:
    """A run of whole words (at least one) of a training sentence."""
    words = draw(st.sampled_from(sentences)).split()
    start = draw(st.integers(0, len(words) - 1))
    stop = draw(st.integers(start + 1, len(words)))
    return " ".join(words[start:stop])


@settings(PROPERTY, max_examples=150)
@given(st.data())
def test_tokenizer_round_trip_of_combined_sentences(tokenizer, train_text, data):
    """``decode(encode(s)) == normalise(s)`` for texts made of training sentences and
    word slices of them, joined by (and wrapped in) assorted whitespace, in NFC or
    NFD form. ``normalise`` is what the project's tokenizer applies (SentencePiece's
    ``nmt_nfkc`` with ``remove_extra_whitespaces``), which on such text is
    ``" ".join(unicodedata.normalize("NFKC", s).split())``: NFKC (NFD umlauts
    recomposed; no-break, thin and ideographic spaces become " "), then leading
    and trailing whitespace dropped and runs collapsed to one space."""
    fragment = st.one_of(st.sampled_from(train_text), word_slices(train_text))
    parts = data.draw(st.lists(fragment, min_size=1, max_size=4), label="parts")
    seps = data.draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(parts) + 1,
                              max_size=len(parts) + 1), label="separators")
    text = seps[0] + "".join(part + sep for part, sep in zip(parts, seps[1:]))
    text = unicodedata.normalize(data.draw(st.sampled_from(["NFC", "NFD"]), label="form"), text)
    expected = " ".join(unicodedata.normalize("NFKC", text).split())
    ids = tokenizer.encode([text])
    assert tokenizer.decode(ids) == [expected]
