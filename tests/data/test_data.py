"""Tests of the data stages: corpus reading, SentencePiece, token-budget batching,
and the data module's on-disk cache.

References are the raw corpus files read with ``gzip``/``open``, SentencePiece's
own processor, and counts recomputed here from the tokenizer.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import re
import socket
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import sentencepiece as spm
import torch

import data.datamodule as datamodule_mod
from data.batching import ParallelDataset, TokenBudgetBatchSampler, collate_batch
from data.corpus import CorpusError, load_parallel_corpus
from data.datamodule import TranslationDataModule
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer


# ---------------------------------------------------------------- helpers
def read_raw(directory: Path, split: str, lang: str) -> list[str]:
    """Lines of ``{split}.{lang}[.gz]`` without their line breaks (the reference)."""
    plain = directory / f"{split}.{lang}"
    if plain.is_file():
        with open(plain, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    with gzip.open(directory / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def train_sentences(multi30k_small) -> list[str]:
    """Training sentences of both languages, as the data module trains on them."""
    return read_raw(multi30k_small, "train", "en") + read_raw(multi30k_small, "train", "de")


@pytest.fixture(scope="module")
def tokenizer(train_sentences) -> Tokenizer:
    return train_tokenizer(train_sentences, vocab_size=400)


# ----------------------------------------------------------------- corpus
@pytest.mark.parametrize("split", ["train", "val", "test_2016_flickr"])
def test_corpus_rows_equal_raw_lines(multi30k_small, tmp_path, split):
    """Gzipped (train, val) and plain (test) files read line for line."""
    corpus = load_parallel_corpus(multi30k_small, "en", "de", [split],
                                  cache_dir=str(tmp_path / "hf"))
    assert list(corpus.keys()) == [split]
    assert corpus[split]["src"] == read_raw(multi30k_small, split, "en")
    assert corpus[split]["tgt"] == read_raw(multi30k_small, split, "de")


def test_corpus_split_mapping(multi30k_small, tmp_path):
    """``{our_name: corpus_name}`` renames the splits of the result."""
    corpus = load_parallel_corpus(multi30k_small, "en", "de",
                                  {"test": "test_2016_flickr", "valid": "val"},
                                  cache_dir=str(tmp_path / "hf"))
    assert sorted(corpus.keys()) == ["test", "valid"]
    assert corpus["test"]["tgt"] == read_raw(multi30k_small, "test_2016_flickr", "de")
    assert corpus["valid"]["src"] == read_raw(multi30k_small, "val", "en")


def test_corpus_line_count_mismatch(tmp_path):
    write_lines(tmp_path / "train.en", ["a", "b", "c"])
    write_lines(tmp_path / "train.de", ["x", "y"])
    with pytest.raises(CorpusError) as info:
        load_parallel_corpus(tmp_path, "en", "de", ["train"], cache_dir=str(tmp_path / "hf"))
    message = str(info.value)
    assert str(tmp_path / "train.en") in message and str(tmp_path / "train.de") in message
    assert "3" in message and "2" in message


def test_corpus_drops_empty_pairs_and_logs(tmp_path, caplog):
    src = ["a cat", "", "a dog", "   ", "a bird", "a fish"]
    tgt = ["eine Katze", "ein Nichts", "", "\t", "ein Vogel", "ein Fisch"]
    write_lines(tmp_path / "train.en", src)
    write_lines(tmp_path / "train.de", tgt)
    keep = [i for i in range(len(src)) if src[i].strip() and tgt[i].strip()]
    with caplog.at_level(logging.WARNING, logger="data.corpus"):
        corpus = load_parallel_corpus(tmp_path, "en", "de", ["train"],
                                      cache_dir=str(tmp_path / "hf"))
    assert corpus["train"]["src"] == [src[i] for i in keep]
    assert corpus["train"]["tgt"] == [tgt[i] for i in keep]
    dropped = len(src) - len(keep)
    messages = [r.getMessage() for r in caplog.records if r.name == "data.corpus"]
    assert any(f"dropped {dropped} of {len(src)}" in m for m in messages), messages


@pytest.mark.parametrize("missing", ["train.de", "train.en"])
def test_corpus_missing_file_lists_found(tmp_path, missing):
    for name in ("train.en", "train.de", "val.en"):
        if name != missing:
            write_lines(tmp_path / name, ["hello"])
    with pytest.raises(CorpusError) as info:
        load_parallel_corpus(tmp_path, "en", "de", ["train"], cache_dir=str(tmp_path / "hf"))
    message = str(info.value)
    assert missing in message
    for present in {"train.en", "train.de", "val.en"} - {missing}:
        assert present in message


def test_corpus_missing_split_lists_found(tmp_path):
    write_lines(tmp_path / "train.en", ["hello"])
    write_lines(tmp_path / "train.de", ["hallo"])
    with pytest.raises(CorpusError) as info:
        load_parallel_corpus(tmp_path, "en", "de", ["valid"], cache_dir=str(tmp_path / "hf"))
    message = str(info.value)
    assert "'valid'" in message and "train.en" in message and "train.de" in message


def test_corpus_hub_unreachable(tmp_path, monkeypatch):
    """A hub id with the hub unreachable (offline mode) names the local-directory form."""
    import datasets
    import huggingface_hub.constants

    # The libraries read the variables at import time: set both the variables
    # and the flags they were turned into, so no request leaves this process.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)  # datasets < 2.20 has none
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so the id cannot be mistaken for a local folder

    def no_network(*args, **kwargs):
        raise AssertionError("the test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(CorpusError) as info:
        load_parallel_corpus("nobody-here/no-such-parallel-corpus", "en", "de", ["train"],
                             cache_dir=str(tmp_path / "hf"))
    message = str(info.value)
    assert "nobody-here/no-such-parallel-corpus" in message
    assert "local directory" in message and "{split}.{lang}[.gz]" in message
    assert isinstance(info.value.__cause__, (ConnectionError, OSError))


# ----------------------------------------------------- corpus: bad input
GOOD = ["a man rides a bike", "zwei Hunde spielen im Schnee", "ein Café", "the end"]


def write_bytes(path: Path, lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("bad,start", [
    (b"caf\xe9 noir", 3),                # Latin-1 e-acute: not a UTF-8 lead byte here
    (b"50 \xe2\x82 each", 3),            # a 3-byte sequence cut after 2 bytes
    (b"\xff\xfe", 0),                    # a byte that is never UTF-8
], ids=["latin1", "truncated", "ff"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("side", ["en", "de"])
def test_corpus_invalid_utf8_names_file_and_line(tmp_path, bad, start, compress, side):
    """The error names the file, the 1-based line the bytes were put on, and their offset."""
    number = 3  # 1-based line of the bad bytes
    lines = [line.encode("utf-8") for line in GOOD]
    lines.insert(number - 1, bad)
    names = {lang: f"train.{lang}" + (".gz" if compress else "") for lang in ("en", "de")}
    write_bytes(tmp_path / names[side], lines)
    write_bytes(tmp_path / names[{"en": "de", "de": "en"}[side]],
                [line.encode("utf-8") for line in GOOD + ["x"]])
    with pytest.raises(CorpusError) as info:
        load_parallel_corpus(tmp_path, "en", "de", ["train"], cache_dir=str(tmp_path / "hf"))
    message = str(info.value)
    path = tmp_path / names[side]
    offset = sum(len(line) + 1 for line in lines[:number - 1]) + start
    assert f"{path} line {number} is not valid UTF-8" in message, message
    assert f"byte 0x{bad[start]:02x}" in message
    assert f"at byte offset {offset} of the {'decompressed ' if compress else ''}file" in message
    assert repr(bad.decode("latin-1")) in message  # the line as it reads in Latin-1
    assert "iconv -f latin1 -t utf-8" in message
    assert ("zcat" in message) == compress
    assert isinstance(info.value.__cause__, Exception)  # the decode error is chained


def test_corpus_invalid_utf8_fixed_as_the_message_says(tmp_path):
    """Re-encoding from Latin-1, as the message suggests, makes the file readable."""
    lines = [line.encode("latin-1") for line in GOOD]  # "ein Café" becomes invalid UTF-8
    write_bytes(tmp_path / "train.en.gz", lines)
    write_lines(tmp_path / "train.de", GOOD)
    with pytest.raises(CorpusError, match=r"train\.en\.gz line 3 is not valid UTF-8"):
        load_parallel_corpus(tmp_path, "en", "de", ["train"], cache_dir=str(tmp_path / "hf"))
    # zcat | iconv -f latin1 -t utf-8 | gzip, in Python:
    with gzip.open(tmp_path / "train.en.gz", "rb") as f:
        fixed = f.read().decode("latin-1").encode("utf-8")
    with gzip.open(tmp_path / "train.en.gz", "wb") as f:
        f.write(fixed)
    corpus = load_parallel_corpus(tmp_path, "en", "de", ["train"],
                                  cache_dir=str(tmp_path / "hf2"))
    assert corpus["train"]["src"] == GOOD


def test_corpus_unknown_language_lists_languages(tmp_path):
    for name in ("train.cs", "train.de.gz", "train.en", "train.fr.gz", "train.tok.en",
                 "train_small.it", "val.en", "val.de"):
        if name.endswith(".gz"):
            write_bytes(tmp_path / name, [b"hello"])
        else:
            write_lines(tmp_path / name, ["hello"])
    for src, tgt, split, missing in (("en", "xx", "train", "xx"), ("xx", "de", "train", "xx"),
                                     ("fr", "en", "val", "fr")):
        with pytest.raises(CorpusError) as info:
            load_parallel_corpus(tmp_path, src, tgt, [split], cache_dir=str(tmp_path / "hf"))
        message = str(info.value)
        assert f"no file for language {missing!r} of split {split!r}" in message, message
        expected = "cs, de, en, fr" if split == "train" else "de, en"
        assert f"languages found for split {split!r}: {expected}." in message, message
        assert "data.src_lang" in message and "data.tgt_lang" in message


def test_corpus_missing_split_lists_splits(tmp_path):
    for name in ("train.en", "train.de", "val.en", "test_2016_flickr.en"):
        write_lines(tmp_path / name, ["hello"])
    with pytest.raises(CorpusError, match=r"splits found: test_2016_flickr, train, val; "
                                          r"check the split names \(data.train_split"):
        load_parallel_corpus(tmp_path, "en", "de", ["valid"], cache_dir=str(tmp_path / "hf"))


def fake_hub_dataset(feature_form: str):
    """An in-memory stand-in for a hub dataset with a de/en ``translation`` column."""
    import datasets

    rows = [{"de": "ein Hund", "en": "a dog"}, {"de": "eine Katze", "en": "a cat"}]
    if feature_form == "Translation":  # as wmt14 declares it
        features = datasets.Features({"translation": datasets.Translation(languages=["en", "de"])})
    else:  # a plain struct of strings, as load_dataset infers from JSON
        features = datasets.Features({"translation": {"de": datasets.Value("string"),
                                                      "en": datasets.Value("string")}})
    return datasets.Dataset.from_dict({"translation": rows}, features=features), rows


@pytest.mark.parametrize("feature_form", ["Translation", "struct"])
def test_corpus_hub_unknown_language_lists_languages(tmp_path, monkeypatch, feature_form):
    import datasets

    ds, rows = fake_hub_dataset(feature_form)
    calls = []

    def load_dataset(dataset_id, config, split, cache_dir):
        calls.append((dataset_id, config, split))
        return ds

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.chdir(tmp_path)  # so the id cannot be mistaken for a local folder
    corpus = load_parallel_corpus("someone/de-en-corpus", "en", "de", ["train"],
                                  hub_config="de-en")
    assert corpus["train"]["src"] == [r["en"] for r in rows]
    assert corpus["train"]["tgt"] == [r["de"] for r in rows]
    with pytest.raises(CorpusError) as info:
        load_parallel_corpus("someone/de-en-corpus", "en", "fr", ["train"], hub_config="de-en")
    message = str(info.value)
    assert "'someone/de-en-corpus' (config 'de-en') split 'train'" in message
    assert "no language 'fr'" in message and "languages present: de, en." in message
    assert calls == [("someone/de-en-corpus", "de-en", "train")] * 2


# -------------------------------------------------------------- tokenizer
def test_tokenizer_special_ids_and_size(tokenizer):
    assert tokenizer.vocab_size == 400
    sp = tokenizer.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert tokenizer.pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_tokenizer_round_trip(tokenizer, train_sentences):
    # SentencePiece collapses runs of whitespace; compare on normally spaced sentences.
    plain = [s for s in train_sentences if s == " ".join(s.split())]
    assert len(plain) > 0.9 * len(train_sentences)
    ids = tokenizer.encode(plain)
    assert all(PAD_ID not in seq and BOS_ID not in seq and EOS_ID not in seq for seq in ids)
    assert tokenizer.decode(ids) == plain


def test_tokenizer_decode_cuts_at_eos_and_drops_specials(tokenizer, train_sentences):
    first, second = tokenizer.encode(train_sentences[:2])
    seqs = [[BOS_ID] + first + [EOS_ID] + second + [PAD_ID, PAD_ID],
            first[:2] + [PAD_ID, BOS_ID] + first[2:] + [EOS_ID, EOS_ID, PAD_ID],
            [EOS_ID] + first,
            first]
    expected = [tokenizer.sp.decode(first)] * 2 + [""] + [tokenizer.sp.decode(first)]
    assert tokenizer.decode(seqs) == expected


def test_tokenizer_pickles(tokenizer, train_sentences, tmp_path):
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.model_proto == tokenizer.model_proto
    assert clone.encode(train_sentences[:20]) == tokenizer.encode(train_sentences[:20])
    tokenizer.save(str(tmp_path / "spm.model"))
    loaded = Tokenizer.load(str(tmp_path / "spm.model"))
    assert loaded.encode(train_sentences[:20]) == tokenizer.encode(train_sentences[:20])


@pytest.mark.parametrize("requested,too,bound,fix,step", [
    (100_000, "large", "at most", "or less", 1),
    (8, "small", "at least", "or more", -1),
], ids=["too_large", "too_small"])
def test_tokenizer_vocab_size_out_of_range(train_sentences, requested, too, bound, fix, step):
    """The message names data.vocab_size and the size SentencePiece accepts; the
    reference for that size is SentencePiece: it trains it, and not one beyond it."""
    with pytest.raises(ValueError) as info:
        train_tokenizer(train_sentences, vocab_size=requested, corpus="the test sentences",
                        num_threads=1)
    message = str(info.value)
    assert f"data.vocab_size={requested} is too {too} for the test sentences" in message
    limit = int(re.search(rf"{bound} (\d+) pieces", message).group(1))
    assert f"Set data.vocab_size to {limit} {fix}" in message, message
    assert train_tokenizer(train_sentences, vocab_size=limit, num_threads=1).vocab_size == limit
    with pytest.raises(ValueError, match=f"{bound} {limit} pieces"):
        train_tokenizer(train_sentences, vocab_size=limit + step, num_threads=1)


def test_tokenizer_rejects_other_special_ids(train_sentences):
    model = io.BytesIO()
    # SentencePiece's defaults: unk 0, bos 1, eos 2, no pad.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(train_sentences), model_writer=model,
                                   vocab_size=300, minloglevel=2, num_threads=1)
    with pytest.raises(ValueError, match="pad/unk/bos/eos"):
        Tokenizer(model.getvalue())


# --------------------------------------------------------------- batching
def random_lens(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 40, size=n), rng.integers(1, 40, size=n)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("max_tokens", [40, 100, 1000])
def test_sampler_covers_every_index_within_budget(shuffle, max_tokens):
    src_lens, tgt_lens = random_lens(500)
    lens = np.maximum(src_lens, tgt_lens)
    sampler = TokenBudgetBatchSampler(src_lens, tgt_lens, max_tokens, shuffle=shuffle, seed=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(500))
        for batch in batches:
            assert len(batch) * lens[batch].max() <= max_tokens


def test_sampler_seed_and_epoch():
    src_lens, tgt_lens = random_lens(300)
    a = TokenBudgetBatchSampler(src_lens, tgt_lens, 200, shuffle=True, seed=5)
    b = TokenBudgetBatchSampler(src_lens, tgt_lens, 200, shuffle=True, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_sampler_without_shuffle_is_sorted_and_fixed():
    src_lens, tgt_lens = random_lens(300)
    lens = np.maximum(src_lens, tgt_lens)
    sampler = TokenBudgetBatchSampler(src_lens, tgt_lens, 200, shuffle=False, seed=5)
    first = list(sampler)
    sampler.set_epoch(7)
    assert list(sampler) == first
    assert list(TokenBudgetBatchSampler(src_lens, tgt_lens, 200, shuffle=False, seed=9)) == first
    flat = [i for b in first for i in b]
    assert flat == np.argsort(lens, kind="stable").tolist()


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_replicas_cover_all_indices(shuffle):
    src_lens, tgt_lens = random_lens(301)
    single = TokenBudgetBatchSampler(src_lens, tgt_lens, 150, shuffle=shuffle, seed=1)
    ranks = [TokenBudgetBatchSampler(src_lens, tgt_lens, 150, shuffle=shuffle, seed=1,
                                     num_replicas=2, rank=r) for r in range(2)]
    per_rank = [list(r) for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == -(-len(single) // 2)
    covered = {i for batches in per_rank for b in batches for i in b}
    assert covered == set(range(301))
    # Together the ranks hold the single-process batches (plus padding repeats).
    together = sorted(map(tuple, per_rank[0] + per_rank[1]))
    assert set(together) == set(map(tuple, single))


def test_sampler_budget_smaller_than_longest():
    with pytest.raises(ValueError, match="max_tokens=10.*longest pair.*12"):
        TokenBudgetBatchSampler(np.array([3, 12, 5]), np.array([4, 2, 11]), 10)


def test_collate_batch():
    rng = np.random.default_rng(0)
    src = [rng.integers(4, 50, size=n).astype(np.int32) for n in (3, 7, 1, 5)]
    tgt = [rng.integers(4, 50, size=n).astype(np.int32) for n in (6, 2, 4, 1)]
    items = [ParallelDataset(src, tgt)[i] for i in (2, 0, 3, 1)]
    batch = collate_batch(items)
    assert batch["index"].tolist() == [2, 0, 3, 1]
    order = [2, 0, 3, 1]
    assert batch["src_valid_len"].tolist() == [len(src[i]) for i in order]
    assert batch["tgt_valid_len"].tolist() == [len(tgt[i]) + 1 for i in order]
    assert batch["src"].shape == (4, 7) and batch["tgt_in"].shape == batch["labels"].shape == (4, 7)
    for row, i in enumerate(order):
        s, t = src[i].tolist(), tgt[i].tolist()
        n = len(t) + 1
        assert batch["src"][row, :len(s)].tolist() == s
        assert (batch["src"][row, len(s):] == PAD_ID).all()
        assert batch["tgt_in"][row, :n].tolist() == [BOS_ID] + t
        assert batch["labels"][row, :n].tolist() == t + [EOS_ID]
        assert (batch["tgt_in"][row, n:] == PAD_ID).all()
        assert (batch["labels"][row, n:] == PAD_ID).all()
    # labels are tgt_in shifted by one on the valid positions.
    valid = torch.arange(7)[None, :-1] < (batch["tgt_valid_len"][:, None] - 1)
    assert torch.equal(batch["labels"][:, :-1][valid], batch["tgt_in"][:, 1:][valid])


def test_collate_source_only():
    src = [np.array([5, 6, EOS_ID]), np.array([7, EOS_ID])]
    batch = collate_batch([ParallelDataset(src)[i] for i in range(2)])
    assert set(batch) == {"src", "src_valid_len", "index"}
    assert batch["src"].tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]


@pytest.mark.parametrize("model_type,alpha", [("unigram", 0.1), ("unigram", 0.5), ("bpe", 0.1)])
def test_tokenizer_sample_encode(tokenizer, train_sentences, model_type, alpha):
    """Subword sampling: lossless, seeded, and a different (longer) segmentation
    than the deterministic one for many sentences; the same for BPE-dropout."""
    tok = tokenizer if model_type == "unigram" else train_tokenizer(
        train_sentences, vocab_size=400, model_type="bpe")
    plain = [s for s in train_sentences if s == " ".join(s.split())][:300]
    best = tok.encode(plain)
    first = tok.sample_encode(plain, alpha, seed=7)
    assert tok.sample_encode(plain, alpha, seed=7) == first  # reproducible
    assert tok.sample_encode(plain, alpha, seed=8) != first
    assert tok.decode(first) == plain  # every sampled segmentation decodes to the sentence
    changed = sum(a != b for a, b in zip(first, best))
    assert changed > 0.2 * len(plain)
    assert sum(map(len, first)) > sum(map(len, best))  # the best one has the fewest pieces
    assert all(PAD_ID not in seq and EOS_ID not in seq for seq in first)
    if model_type == "unigram":  # sampling among the 2 best: at most 2 segmentations
        pairs = [tok.sample_encode(plain[:20], alpha, nbest_size=2, seed=k) for k in range(8)]
        for i in range(20):
            assert len({tuple(p[i]) for p in pairs}) <= 2


# ------------------------------------------------------------- datamodule
def make_datamodule(source, cache_dir, **kwargs) -> TranslationDataModule:
    return TranslationDataModule(source=str(source), vocab_size=kwargs.pop("vocab_size", 400),
                                 cache_dir=str(cache_dir), **kwargs)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dm_cache")


@pytest.fixture(scope="module")
def datamodule(multi30k_small, cache_dir) -> TranslationDataModule:
    dm = make_datamodule(multi30k_small, cache_dir)
    dm.setup("fit")
    return dm


def test_datamodule_setup(datamodule, multi30k_small):
    dm = datamodule
    assert set(dm.datasets) == {"train", "valid", "test"}
    assert dm.tokenizer.vocab_size == 400
    for name, split, n in (("train", "train", 400), ("valid", "val", 60),
                           ("test", "test_2016_flickr", 50)):
        src_raw = read_raw(multi30k_small, split, "en")
        tgt_raw = read_raw(multi30k_small, split, "de")
        ds = dm.datasets[name]
        assert len(ds) == n
        expected_src = [ids + [EOS_ID] for ids in dm.tokenizer.encode(src_raw)]
        assert [s.tolist() for s in ds.src] == expected_src
        assert [t.tolist() for t in ds.tgt] == dm.tokenizer.encode(tgt_raw)
        if name != "train":
            assert dm.references[name] == tgt_raw
            assert dm.sources[name] == src_raw


def test_datamodule_dataloader(datamodule):
    seen = []
    for batch in datamodule.train_dataloader():
        assert batch["src"].shape[0] * max(batch["src"].shape[1], batch["labels"].shape[1]) \
            <= datamodule.max_tokens
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(datamodule.datasets["train"])))


def test_datamodule_reads_cache_without_retokenizing(datamodule, multi30k_small, cache_dir,
                                                     monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the tokenizer was retrained instead of read from the cache")

    monkeypatch.setattr(datamodule_mod, "train_tokenizer", no_training)
    again = make_datamodule(multi30k_small, cache_dir)
    assert again.cache_path == datamodule.cache_path
    again.setup("fit")
    assert again.tokenizer.model_proto == datamodule.tokenizer.model_proto
    for name in ("train", "valid", "test"):
        for a, b in ((again.datasets[name].src, datamodule.datasets[name].src),
                     (again.datasets[name].tgt, datamodule.datasets[name].tgt)):
            assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert again.references == datamodule.references


def test_datamodule_cache_key_depends_on_vocab(datamodule, multi30k_small, cache_dir):
    other = make_datamodule(multi30k_small, cache_dir, vocab_size=300)
    assert other.cache_path != datamodule.cache_path
    assert other.cache_path.parent == datamodule.cache_path.parent


def test_datamodule_drops_long_training_pairs(datamodule, multi30k_small, cache_dir, caplog):
    max_len = 20
    tok = datamodule.tokenizer  # same corpus and vocabulary -> same SentencePiece model
    src = tok.encode(read_raw(multi30k_small, "train", "en"))
    tgt = tok.encode(read_raw(multi30k_small, "train", "de"))
    keep = [i for i in range(len(src)) if len(src[i]) + 1 <= max_len and len(tgt[i]) + 1 <= max_len]
    assert 0 < len(keep) < len(src)

    dm = make_datamodule(multi30k_small, cache_dir, max_len=max_len)
    with caplog.at_level(logging.WARNING, logger="data.datamodule"):
        dm.setup("fit")
    assert dm.tokenizer.model_proto == tok.model_proto
    assert [s.tolist() for s in dm.datasets["train"].src] == [src[i] + [EOS_ID] for i in keep]
    messages = [r.getMessage() for r in caplog.records if r.name == "data.datamodule"]
    assert any(f"dropped {len(src) - len(keep)} of {len(src)}" in m and f"max_len={max_len}" in m
               for m in messages), messages
    # Evaluation splits keep every pair, sources truncated to max_len (EOS kept last).
    valid = dm.datasets["valid"]
    assert len(valid) == 60
    assert all(len(s) <= max_len and s[-1] == EOS_ID for s in valid.src)
    assert all(len(t) + 1 <= max_len for t in valid.tgt)


def test_datamodule_subword_sampling_per_epoch(multi30k_small, cache_dir):
    """spm_alpha > 0: every epoch a seeded new segmentation of the training split
    (source + EOS, target), decoding to the raw sentences; val/test unchanged;
    the cached ids (and the tokenizer) are those of the deterministic run.
    (The same seed repeats a segmentation within one process only: see
    Tokenizer.sample_encode.)"""
    # max_len 512 > every sentence of the corpus in characters (<= 211), so no
    # sampled segmentation can be dropped (at 128 a rare draw crosses it).
    deterministic = make_datamodule(multi30k_small, cache_dir, max_len=512)
    dm = make_datamodule(multi30k_small, cache_dir, spm_alpha=0.2, seed=3, max_len=512)
    assert dm.cache_path == deterministic.cache_path
    deterministic.setup("fit")
    dm.setup("fit")
    epoch0, epoch1 = dm.sampled_train(0), dm.sampled_train(1)
    again = make_datamodule(multi30k_small, cache_dir, spm_alpha=0.2, seed=3, max_len=512)
    again.setup("fit")
    same = again.sampled_train(1)
    assert [t.tolist() for t in same.tgt] == [t.tolist() for t in epoch1.tgt]
    assert [t.tolist() for t in epoch0.tgt] != [t.tolist() for t in epoch1.tgt]
    assert len(epoch0) == len(epoch1) == len(read_raw(multi30k_small, "train", "en"))
    assert all(s[-1] == EOS_ID for s in epoch0.src)
    assert dm.tokenizer.decode([t.tolist() for t in epoch0.tgt]) == \
        deterministic.tokenizer.decode([t.tolist() for t in deterministic.datasets["train"].tgt])
    assert dm.tokenizer.decode([s.tolist() for s in epoch1.src]) == \
        dm.tokenizer.decode([s.tolist() for s in deterministic.datasets["train"].src])
    assert epoch0.tgt_lens().sum() > deterministic.datasets["train"].tgt_lens().sum()
    for name in ("valid", "test"):
        assert [s.tolist() for s in dm.datasets[name].src] == \
            [s.tolist() for s in deterministic.datasets[name].src]
    # the training loader serves the epoch's segmentation; validation the fixed one
    loader_ids = {}
    for batch in dm.train_dataloader():
        for i, n, row in zip(batch["index"].tolist(), batch["tgt_valid_len"].tolist(),
                             batch["labels"].tolist()):
            loader_ids[i] = row[: n - 1]
    assert [loader_ids[i] for i in range(len(epoch0))] == [t.tolist() for t in epoch0.tgt]


def test_datamodule_subword_sampling_needs_reloaded_loaders(multi30k_small, cache_dir):
    dm = make_datamodule(multi30k_small, cache_dir, spm_alpha=0.2)
    dm.setup("fit")
    dm.trainer = L.Trainer(reload_dataloaders_every_n_epochs=0, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(CorpusError, match=r"data.spm_alpha=0.2 .*"
                       r"trainer.reload_dataloaders_every_n_epochs=0 .*set "
                       r"trainer.reload_dataloaders_every_n_epochs: 1"):
        dm.train_dataloader()
    dm.trainer = L.Trainer(reload_dataloaders_every_n_epochs=1, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False)
    assert len(dm.train_dataloader().dataset) == len(dm.sampled_train(0))


@pytest.mark.parametrize("kwargs,message", [
    ({"spm_alpha": -0.1}, r"data.spm_alpha=-0.1 is out of range: .* > 0"),
    ({"spm_alpha": 1.0, "spm_model_type": "bpe"},
     r"data.spm_alpha=1.0 is out of range: .*BPE-dropout probability, in \[0, 1\)"),
    ({"spm_alpha": 0.1, "spm_nbest_size": 1}, r"data.spm_nbest_size=1 must be -1 .* at least 2"),
])
def test_datamodule_subword_sampling_settings_refused(kwargs, message, tmp_path):
    with pytest.raises(CorpusError, match=message):
        make_datamodule(tmp_path, tmp_path, **kwargs)


def test_subword_sampling_in_a_lightning_fit(multi30k_small, cache_dir, monkeypatch, tmp_path):
    """A 2-epoch fit with reload_dataloaders_every_n_epochs=1 trains epoch e on
    sampled_train(e): two different segmentations, every batch of each used."""
    from model.config import TransformerConfig
    from training.module import TranslationModule

    dm = make_datamodule(multi30k_small, cache_dir, spm_alpha=0.2, max_tokens=2048)
    served = []
    original = dm.sampled_train

    def spy(epoch):
        ds = original(epoch)
        served.append((epoch, sum(map(len, ds.tgt))))
        return ds

    monkeypatch.setattr(dm, "sampled_train", spy)
    module = TranslationModule(TransformerConfig(vocab_size=400, num_hiddens=16, ffn_num_hiddens=16,
                                                 num_heads=2, num_enc_blks=1, num_dec_blks=1),
                               warmup_steps=2)
    trainer = L.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, limit_val_batches=0,
                        logger=False, default_root_dir=str(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert [e for e, _ in served] == [0, 1]
    assert served[0][1] != served[1][1]  # another segmentation (another piece count)
    batches = [len(TokenBudgetBatchSampler(original(e).src_lens(), original(e).tgt_lens(),
                                           2048, seed=0)) for e in (0, 1)]
    assert trainer.global_step == sum(batches)


@pytest.mark.parametrize("with_logger", [True, False])
def test_fit_saves_tokenizer_beside_logs_only(datamodule, with_logger, tmp_path, monkeypatch):
    """fit writes the run's spm.model into the logger's folder (the tokenizer's
    exact bytes); without a logger nothing lands in the working directory."""
    from model.config import TransformerConfig
    from training.module import TranslationModule

    monkeypatch.chdir(tmp_path)
    module = TranslationModule(TransformerConfig(vocab_size=datamodule.tokenizer.vocab_size,
                                                 num_hiddens=16, ffn_num_hiddens=16, num_heads=2,
                                                 num_enc_blks=1, num_dec_blks=1))
    logger = L.pytorch.loggers.CSVLogger(tmp_path / "logs") if with_logger else False
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    saved = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("spm.model"))
    if with_logger:
        assert saved == [Path(trainer.log_dir).relative_to(tmp_path) / "spm.model"]
        assert (Path(trainer.log_dir) / "spm.model").read_bytes() == \
            datamodule.tokenizer.model_proto
    else:
        assert saved == []
