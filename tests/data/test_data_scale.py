"""The data stage at scale: linear reads, the memory-mapped cache, the prepare command,
and the WMT14 config's data path.

* The cache holds the same ids and the same ``spm.model`` bytes as the
  pipeline it replaced (whole lists in memory, one ``encode`` call), on a
  slice of the real Multi30k.
* No stage reads a ``datasets.Dataset`` row by row: a spy counts the rows
  formatted one at a time while a 20 k-pair corpus (with empty lines, so the
  filter's indices mapping is in the way) is read, prepared and set up.
* Batches cut by the vectorized sampler are those of the greedy definition.
* A damaged cache is rebuilt to identical ids; a multi-node run without a
  cache is refused; ``scripts/prepare_data.py`` builds what training reads.
* ``configs/wmt14_en_de.yaml`` goes through the hub path on a corpus in the
  hub dataset's shape (a ``translation`` column) and trains two updates.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

import data.datamodule as datamodule_mod
from data.batching import TokenBudgetBatchSampler
from data.cache import PackedSequences, pack
from data.corpus import CorpusError, load_parallel_corpus
from data.datamodule import TranslationDataModule
from data.tokenizer import EOS_ID, train_tokenizer

REPO = Path(__file__).resolve().parents[2]
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"
WMT_CONFIG = REPO / "configs" / "wmt14_en_de.yaml"


def _lines(path: Path, n: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return lines if n is None else lines[:n]


@pytest.fixture(scope="module")
def multi30k_3k(tmp_path_factory) -> Path:
    """The first 3,000 training pairs of Multi30k and its val/test splits (unchanged)."""
    if not MULTI30K.is_dir():
        pytest.skip(f"Multi30k not found at {MULTI30K}")
    out = tmp_path_factory.mktemp("multi30k_3k")
    for lang in ("en", "de"):
        (out / f"train.{lang}").write_text("\n".join(_lines(MULTI30K / f"train.{lang}.gz",
                                                            3000)) + "\n", encoding="utf-8")
        for split in ("val", "test_2016_flickr"):
            (out / f"{split}.{lang}.gz").symlink_to(MULTI30K / f"{split}.{lang}.gz")
    return out


@pytest.mark.slow
def test_cache_ids_and_tokenizer_identical_to_whole_list_pipeline(multi30k_3k, tmp_path):
    """The streamed, chunked pipeline gives the bytes and ids of the one it replaced:
    SentencePiece trained on one list (sources, then targets), every split encoded
    in one call, EOS appended to sources."""
    src = (multi30k_3k / "train.en").read_text(encoding="utf-8").splitlines()
    tgt = (multi30k_3k / "train.de").read_text(encoding="utf-8").splitlines()
    reference = train_tokenizer(src + tgt, vocab_size=2000)

    dm = TranslationDataModule(source=str(multi30k_3k), vocab_size=2000,
                               cache_dir=str(tmp_path), max_len=512)
    dm.setup("fit")
    assert (dm.cache_path / "spm.model").read_bytes() == reference.model_proto
    for name, split in (("train", None), ("valid", "val"), ("test", "test_2016_flickr")):
        if split is None:
            s, t = src, tgt
        else:
            s, t = (_lines(MULTI30K / f"{split}.{lang}.gz") for lang in ("en", "de"))
        ds = dm.datasets[name]
        assert [x.tolist() for x in ds.src] == [ids + [EOS_ID] for ids in reference.encode(s)]
        assert [x.tolist() for x in ds.tgt] == reference.encode(t)
    train = dm.datasets["train"]
    # memory-mapped, indexed in place; lengths from the offsets
    assert isinstance(train.src.flat, np.memmap) and isinstance(train.tgt.offsets, np.memmap)
    assert train.src_lens().tolist() == [len(x) for x in train.src]
    # a spawned worker re-opens the files instead of receiving a copy of the ids
    state = pickle.dumps(train.src)
    assert len(state) < 2000
    again = pickle.loads(state)
    assert isinstance(again.flat, np.memmap) and [x.tolist() for x in again] == \
        [x.tolist() for x in train.src]


def test_pack_appends_eos():
    flat, lengths = pack([[5, 6], [], [7]], append=EOS_ID)
    assert flat.tolist() == [5, 6, EOS_ID, EOS_ID, 7, EOS_ID] and lengths.tolist() == [3, 1, 2]
    flat, lengths = pack([[5, 6], [], [7]])
    assert flat.dtype == np.int32 and flat.tolist() == [5, 6, 7] and lengths.tolist() == [2, 0, 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seqs = PackedSequences(flat, offsets).subset(np.array([2, 0]))
    assert [s.tolist() for s in seqs] == [[7], [5, 6]] and seqs.lengths().tolist() == [1, 2]
    with pytest.raises(ValueError, match="offsets run from 0 to 4, expected 0 to 3"):
        PackedSequences(flat, np.array([0, 2, 4]))


def _greedy_batches(lens: np.ndarray, order: np.ndarray, max_tokens: int) -> list[list[int]]:
    """The definition: walk the pairs by length, cut when the next would exceed the budget."""
    batches, batch, longest = [], [], 0
    for i in order[np.argsort(lens[order], kind="stable")].tolist():
        if batch and max(longest, lens[i]) * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, int(lens[i]))
    return batches + [batch] if batch else batches


@pytest.mark.parametrize("max_tokens", [64, 200, 1000])
def test_vectorized_batches_equal_greedy_definition(max_tokens):
    rng = np.random.default_rng(max_tokens)
    src, tgt = rng.integers(1, 60, 3000), rng.integers(1, 60, 3000)
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens, shuffle=False)
    assert list(sampler) == _greedy_batches(np.maximum(src, tgt), np.arange(3000), max_tokens)
    shuffled = TokenBudgetBatchSampler(src, tgt, max_tokens, shuffle=True, seed=4)
    expected_order = np.random.default_rng(4).permutation(3000)
    assert sorted(map(tuple, shuffled)) == \
        sorted(map(tuple, _greedy_batches(np.maximum(src, tgt), expected_order, max_tokens)))


# ------------------------------------------------------- no row-by-row reads
class RowSpy:
    """Counts rows that ``datasets`` formats one at a time (``Formatter.format_row``:
    what ``list(ds["col"])``, ``for row in ds`` and ``ds[i]`` do per row)."""

    def __init__(self, monkeypatch):
        from datasets.formatting import formatting

        self.rows = 0
        for cls in {formatting.Formatter, *_subclasses(formatting.Formatter)}:
            if "format_row" in vars(cls):
                monkeypatch.setattr(cls, "format_row", self._wrap(vars(cls)["format_row"]))

    def _wrap(self, method):
        def format_row(formatter, pa_table):
            self.rows += 1
            return method(formatter, pa_table)
        return format_row


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@pytest.fixture(scope="module")
def corpus_20k(multi30k_small, tmp_path_factory) -> Path:
    """20,000 numbered pairs (the 400-pair slice 50 times) with 10 empty target lines."""
    out = tmp_path_factory.mktemp("corpus_20k")
    for lang in ("en", "de"):
        lines = _lines(multi30k_small / f"train.{lang}.gz")
        numbered = [f"{k} {line}" for k, line in enumerate(lines * 50)]
        if lang == "de":
            for k in range(0, 20000, 2000):
                numbered[k] = " "
        (out / f"train.{lang}").write_text("\n".join(numbered) + "\n", encoding="utf-8")
        for split in ("val", "test_2016_flickr"):
            name = f"{split}.{lang}" + (".gz" if split == "val" else "")
            (out / name).symlink_to(multi30k_small / name)
    return out


@pytest.mark.slow
def test_no_stage_reads_rows_one_at_a_time(corpus_20k, tmp_path, monkeypatch, caplog):
    spy = RowSpy(monkeypatch)
    with caplog.at_level(logging.WARNING):
        dm = TranslationDataModule(source=str(corpus_20k), vocab_size=400,
                                   cache_dir=str(tmp_path))
        dm.prepare_data()
        dm.setup("fit")
    assert spy.rows < 100, f"{spy.rows} rows of 20,000 were read one at a time"
    assert any("dropped 10 of 20000 pairs" in r.getMessage() for r in caplog.records)
    # the filter's indices mapping was respected: the pairs are the non-empty ones
    kept = [k for k in range(20000) if k % 2000]
    en = (corpus_20k / "train.en").read_text(encoding="utf-8").splitlines()
    train = dm.datasets["train"]
    assert len(train) == 19990
    assert dm.tokenizer.decode([s.tolist() for s in train.src[:3]]) == [en[k] for k in kept[:3]]
    spy.rows = 0  # subword sampling reads the training text again, in chunks
    sampling = TranslationDataModule(source=str(corpus_20k), vocab_size=400,
                                     cache_dir=str(tmp_path), spm_alpha=0.5)
    sampling.setup("fit")
    assert len(sampling.sampled_train(0)) > 19000
    assert spy.rows < 100, f"{spy.rows} rows read one at a time by subword sampling"
    # the spy does see a row-by-row read
    spy.rows = 0
    corpus = load_parallel_corpus(str(corpus_20k), "en", "de", ["val"])
    list(corpus["val"])
    assert spy.rows == 60


@pytest.mark.slow
def test_tokenizer_trains_on_a_seeded_sample_of_a_large_split(corpus_20k, tmp_path, monkeypatch):
    """data.spm_input_sentences caps what SentencePiece is given: a seeded uniform
    sample of the 39,980 training sentences (sources and targets), the same every run."""
    given = []

    def counting(sentences, **kwargs):
        sentences = list(sentences)
        given.append(sentences)
        return train_tokenizer(sentences, **kwargs)

    monkeypatch.setattr(datamodule_mod, "train_tokenizer", counting)
    for run in range(2):
        dm = TranslationDataModule(source=str(corpus_20k), vocab_size=400, spm_input_sentences=3000,
                                   cache_dir=str(tmp_path / f"run{run}"))
        dm.prepare_data()
    assert len(given[0]) == 3000 and given[0] == given[1]
    en = set((corpus_20k / "train.en").read_text(encoding="utf-8").splitlines())
    from_en = sum(s in en for s in given[0])
    assert 1200 < from_en < 1800  # both languages sampled, about half each


# ------------------------------------------------------------------- cache
def test_damaged_cache_is_rebuilt_to_identical_ids(multi30k_small, tmp_path, caplog):
    dm = TranslationDataModule(source=str(multi30k_small), vocab_size=400, cache_dir=str(tmp_path))
    dm.setup("fit")
    before = [s.tolist() for s in dm.datasets["train"].src]
    model = (dm.cache_path / "spm.model").read_bytes()
    ids = dm.cache_path / "train.src.npy"
    ids.write_bytes(ids.read_bytes()[: ids.stat().st_size // 2])  # cut in half
    again = TranslationDataModule(source=str(multi30k_small), vocab_size=400,
                                  cache_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="data.datamodule"):
        again.setup("fit")
    assert any("is damaged" in r.getMessage() and "train.src.npy" in r.getMessage()
               and "rebuilding" in r.getMessage() for r in caplog.records)
    assert [s.tolist() for s in again.datasets["train"].src] == before
    assert (again.cache_path / "spm.model").read_bytes() == model
    assert sorted(p.name for p in again.cache_path.parent.iterdir()) == [again.cache_path.name]


def test_multi_node_run_without_cache_is_refused(multi30k_small, tmp_path):
    dm = TranslationDataModule(source=str(multi30k_small), vocab_size=400, cache_dir=str(tmp_path))

    class TwoNodes:
        num_nodes = 2

    dm.trainer = TwoNodes()
    with pytest.raises(CorpusError, match=r"trainer.num_nodes=2: .*scripts/prepare_data.py"):
        dm.prepare_data()
    assert not (tmp_path / "tokenized").exists() or not any((tmp_path / "tokenized").iterdir())


def test_prepare_command_builds_what_training_reads(multi30k_small, tmp_path, monkeypatch,
                                                    capsys):
    from conftest import load_script

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"accelerator": "gpu"}, "model": {},
                                      "data": {"source": str(multi30k_small),
                                               "vocab_size": 8000}}))
    prepare = load_script("prepare_data")
    manifest = prepare.main(["--config", str(config), "--data.vocab_size", "400",
                             "--data.cache_dir", str(tmp_path / "cache"), "--verify"])
    out = capsys.readouterr().out
    assert "train (train): 400 pairs" in out and "verified" in out
    assert manifest["splits"]["valid"]["pairs"] == 60

    def no_training(*args, **kwargs):
        raise AssertionError("training tokenized again instead of reading the prepared cache")

    monkeypatch.setattr(datamodule_mod, "train_tokenizer", no_training)
    dm = TranslationDataModule(source=str(multi30k_small), vocab_size=400,
                               cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 400

    # bad input: one line, exit status 2
    for args, expected in ((["--config", str(tmp_path / "missing.yaml")], "no such file"),
                           (["--config", str(config), "--data.vocab_sise", "3"], "vocab_sise"),
                           (["--config", str(config), "--data.max_tokens", "5"],
                            "data.max_tokens=5")):
        with pytest.raises(SystemExit) as exit_info:
            prepare.main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("prepare_data.py: error:") \
            and expected in err[0], err


# ------------------------------------------------------------- WMT14 config
def _hub_shaped(n: int, lines_en: list[str], lines_de: list[str]) -> datasets.Dataset:
    features = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    rows = [{"de": lines_de[i % len(lines_de)], "en": lines_en[i % len(lines_en)]}
            for i in range(n)]
    return datasets.Dataset.from_dict({"translation": rows}, features=features)


@pytest.mark.slow
def test_wmt14_config_data_path_and_two_updates(multi30k_small, tmp_path, monkeypatch):
    """The WMT14 config on a corpus shaped like ``wmt/wmt14`` (config ``de-en``: a
    ``translation`` column with ``de``/``en``; splits train/validation/test):
    prepare and set up through the hub path, then two Transformer-base updates on the CPU."""
    from conftest import load_script

    shipped = yaml.safe_load(WMT_CONFIG.read_text())
    assert shipped["data"]["source"] == "wmt/wmt14" and shipped["data"]["hub_config"] == "de-en"
    en, de = _lines(multi30k_small / "train.en.gz"), _lines(multi30k_small / "train.de.gz")
    splits = {"train": _hub_shaped(2000, en, de), "validation": _hub_shaped(20, en, de),
              "test": _hub_shaped(20, en[100:], de[100:])}
    asked = []

    def load_dataset(path, name=None, split=None, cache_dir=None, **kwargs):
        asked.append((path, name, split))
        return splits[split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    spy = RowSpy(monkeypatch)
    train = load_script("train")
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = train.main(["fit", "--config", str(WMT_CONFIG),
                      "--trainer.accelerator", "cpu", "--trainer.precision", "32-true",
                      "--trainer.max_steps", "2", "--trainer.accumulate_grad_batches", "1",
                      "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
                      "--trainer.enable_progress_bar", "false",
                      "--trainer.default_root_dir", str(run_dir),
                      "--model.max_len_b", "5",
                      "--data.vocab_size", "500", "--data.max_tokens", "256",
                      "--data.num_workers", "0", "--data.cache_dir", str(tmp_path / "cache")])
    assert ("wmt/wmt14", "de-en", "train") in asked and ("wmt/wmt14", "de-en", "test") in asked
    assert spy.rows < 50
    dm, module = cli.datamodule, cli.model
    assert cli.trainer.global_step == 2
    assert module.hparams.config["num_enc_blks"] == 6 and module.hparams.config["num_hiddens"] == 512
    assert dm.tokenizer.vocab_size == 500
    assert dm.tokenizer.decode([dm.datasets["train"].src[1].tolist()]) == [en[1]]
    assert dm.references["test"] == de[100:120]
    assert (run_dir / "checkpoints" / "best.ckpt").exists()  # validated once, at update 2
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert "val_bleu" in cli.trainer.callback_metrics
