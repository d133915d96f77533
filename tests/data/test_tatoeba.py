"""Tests of data/tatoeba.py: reading a manythings.org zip, the split grouped by the
English sentence, and the data module with a Tatoeba zip as its source.

The reference is a small synthetic ``fra.txt`` written here (repeated English
sentences with several French translations, blank and half-empty lines, the
attribution column), parsed again with ``str.split`` in this file; and, when it
is present, the real ``../shared/data/tatoeba-fra-eng/fra-eng.zip`` with the
counts of ``../shared/data/README.md``.
"""

from __future__ import annotations

import logging
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

import data.datamodule as datamodule_mod
from data.corpus import CorpusError, load_parallel_corpus
from data.datamodule import TranslationDataModule
from data.tatoeba import GroupedSplit, group_ids, grouped_split, load_tatoeba, read_tatoeba

REPO = Path(__file__).resolve().parents[2]
REAL_ZIP = REPO.parent / "shared" / "data" / "tatoeba-fra-eng" / "fra-eng.zip"
SPLITS = ["train", "valid", "test"]

NOUNS = ["cat", "dog", "bird", "horse", "fish", "child", "teacher", "doctor"]
NOMS = ["chat", "chien", "oiseau", "cheval", "poisson", "enfant", "professeur", "médecin"]
VERBS = [("sleeps", "dort"), ("eats", "mange"), ("runs", "court"), ("sings", "chante"),
         ("waits", "attend"), ("reads", "lit")]


# ---------------------------------------------------------------- helpers
def synthetic_lines() -> list[str]:
    """48 English sentences with 1-4 French translations each, plus lines to drop."""
    lines = []
    for i, (noun, nom) in enumerate(zip(NOUNS, NOMS)):
        for j, (verb, verbe) in enumerate(VERBS):
            english = f"The {noun} {verb}."
            for k in range(1 + (i + 2 * j) % 4):
                french = [f"Le {nom} {verbe}.", f"Le {nom} {verbe} !", f"Un {nom} {verbe}.",
                          f"Ce {nom} {verbe}."][k]
                lines.append(f"{english}\t{french}\tCC-BY 2.0 (France) Attribution: "
                             f"tatoeba.org #{100 * i + j} (A) & #{1000 * i + 10 * j + k} (B)")
    lines[5:5] = [""]                                      # blank line
    lines[20:20] = ["The cat waits.\t \tCC-BY attribution"]  # empty French side
    lines[40:40] = ["   \tLe vide.\tCC-BY attribution"]      # empty English side
    lines.append("The  cat   sleeps.\tLe chat dort bien.")  # no attribution; same English
    return lines                                              # as line 1 up to whitespace


def write_zip(path: Path, lines: list[str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("_about.txt", "synthetic test corpus\n")
        archive.writestr("fra.txt", "".join(line + "\n" for line in lines))
    return path


def expected_pairs(lines: list[str]) -> dict[int, tuple[str, str, str]]:
    """Line number -> (English, French, attribution) of every non-empty pair."""
    out = {}
    for number, line in enumerate(lines, start=1):
        en, fr, attribution = (line.split("\t") + ["", ""])[:3]
        if en.strip() and fr.strip():
            out[number] = (en, fr, attribution)
    return out


def key(sentence: str) -> str:
    return " ".join(sentence.split())


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return synthetic_lines()


@pytest.fixture(scope="module")
def tatoeba_zip(tmp_path_factory, lines) -> Path:
    return write_zip(tmp_path_factory.mktemp("tatoeba") / "fra-eng.zip", lines)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tatoeba_hf"))


SMALL = GroupedSplit(valid_size=20, test_size=25, seed=0)


def load(tatoeba_zip, hf_cache, split=SMALL, src="en", tgt="fr"):
    return load_tatoeba(tatoeba_zip, src, tgt, SPLITS, cache_dir=hf_cache, split=split)


# ---------------------------------------------------------------- reading
def test_read_keeps_attribution_and_drops_empty_pairs(tatoeba_zip, hf_cache, lines, caplog):
    with caplog.at_level(logging.WARNING, logger="data.tatoeba"):
        pairs = read_tatoeba(tatoeba_zip, hf_cache)
    expected = expected_pairs(lines)
    assert pairs["line"][:] == list(expected)
    assert list(zip(pairs["en"][:], pairs["fr"][:], pairs["attribution"][:])) == \
        list(expected.values())
    dropped = len(lines) - len(expected)
    assert dropped == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "data.tatoeba"]
    assert any(f"dropped {dropped} of {len(lines)}" in m for m in messages), messages


# ------------------------------------------------------------------ split
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_no_english_sentence_in_two_splits(tatoeba_zip, hf_cache, seed):
    corpus = load(tatoeba_zip, hf_cache, GroupedSplit(20, 25, seed))
    english = {name: {key(s) for s in corpus[name]["src"]} for name in SPLITS}
    assert not english["train"] & english["valid"]
    assert not english["train"] & english["test"]
    assert not english["valid"] & english["test"]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_covers_every_pair_once(tatoeba_zip, hf_cache, lines, seed):
    corpus = load(tatoeba_zip, hf_cache, GroupedSplit(20, 25, seed))
    expected = expected_pairs(lines)
    seen = Counter()
    for name in SPLITS:
        ds = corpus[name]
        assert ds["line"][:] == sorted(ds["line"][:])  # file order within a split
        for number, src, tgt, attribution in zip(ds["line"][:], ds["src"][:], ds["tgt"][:],
                                                 ds["attribution"][:]):
            assert expected[number] == (src, tgt, attribution)
            seen[number] += 1
    assert seen == Counter(expected.keys())


def test_split_sizes_near_targets(tatoeba_zip, hf_cache, lines):
    largest = max(Counter(key(en) for en, _, _ in expected_pairs(lines).values()).values())
    assert largest >= 4  # the synthetic corpus has groups of several translations
    for seed in range(5):
        corpus = load(tatoeba_zip, hf_cache, GroupedSplit(20, 25, seed))
        assert 25 <= len(corpus["test"]) < 25 + largest
        assert 20 <= len(corpus["valid"]) < 20 + largest


def test_split_deterministic_for_a_seed(tatoeba_zip, hf_cache):
    first, again = load(tatoeba_zip, hf_cache), load(tatoeba_zip, hf_cache)
    other = load(tatoeba_zip, hf_cache, GroupedSplit(20, 25, seed=1))
    for name in SPLITS:
        assert first[name]["line"][:] == again[name]["line"][:]
    assert first["test"]["line"][:] != other["test"]["line"][:]


def test_grouped_split_of_group_ids():
    """Straight from group ids: whole groups, every row once."""
    groups = group_ids(["a", "b", "a", "c  d", "c d", "e", "b", "f", "g", "a"])
    assert groups.tolist() == [0, 1, 0, 2, 2, 3, 1, 4, 5, 0]
    rows = grouped_split(groups, GroupedSplit(valid_size=2, test_size=2, seed=3))
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(10))
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not set(groups[rows[a]]) & set(groups[rows[b]])


@pytest.mark.parametrize("src,tgt", [("en", "fr"), ("fr", "en")])
def test_direction_selects_columns(tatoeba_zip, hf_cache, lines, src, tgt):
    corpus = load(tatoeba_zip, hf_cache, src=src, tgt=tgt)
    expected = expected_pairs(lines)
    side = {"en": 0, "fr": 1}
    for name in SPLITS:
        ds = corpus[name]
        assert ds.column_names == ["src", "tgt", "attribution", "line"]
        assert ds["src"][:] == [expected[n][side[src]] for n in ds["line"][:]]
        assert ds["tgt"][:] == [expected[n][side[tgt]] for n in ds["line"][:]]


def test_load_parallel_corpus_routes_a_zip(tatoeba_zip, hf_cache):
    """The corpus reader used by the data module and the scripts reads the zip, with
    the default split settings when none are given."""
    corpus = load_parallel_corpus(tatoeba_zip, "en", "fr", {"test": "test"}, cache_dir=hf_cache,
                                  grouped_split=SMALL)
    assert corpus["test"]["line"][:] == load(tatoeba_zip, hf_cache)["test"]["line"][:]
    # Default settings (5000 + 5000 pairs) do not fit 112 pairs: the error says so.
    with pytest.raises(CorpusError, match="data.valid_size=5000 plus data.test_size=5000"):
        load_parallel_corpus(tatoeba_zip, "en", "fr", ["test"], cache_dir=hf_cache)


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("src,tgt,problem", [
    ("en", "de", "unknown language code 'de'"),
    ("eng", "fra", "unknown language codes 'eng', 'fra'"),  # the zip's own naming
    ("fr", "fr", "the two languages must differ"),
], ids=["unknown", "three-letter", "same"])
def test_error_languages(tatoeba_zip, hf_cache, src, tgt, problem):
    with pytest.raises(CorpusError) as info:
        load(tatoeba_zip, hf_cache, src=src, tgt=tgt)
    message = str(info.value)
    assert f"src_lang={src!r} and tgt_lang={tgt!r}: {problem}; the valid codes are en, fr." \
        in message, message
    assert "data.src_lang and data.tgt_lang" in message


def test_error_unknown_split(tatoeba_zip, hf_cache):
    with pytest.raises(CorpusError, match=r"no split 'val'.*train, valid, test"):
        load_tatoeba(tatoeba_zip, "en", "fr", {"valid": "val"}, cache_dir=hf_cache, split=SMALL)


def test_error_sizes(tatoeba_zip, hf_cache):
    with pytest.raises(CorpusError, match="leave no training pair"):
        load(tatoeba_zip, hf_cache, GroupedSplit(valid_size=60, test_size=61))
    with pytest.raises(CorpusError, match="at least 1 pair"):
        load(tatoeba_zip, hf_cache, GroupedSplit(valid_size=0, test_size=10))


def test_error_line_without_tab(tmp_path, lines):
    bad = write_zip(tmp_path / "fra-eng.zip", lines[:3] + ["just one field"] + lines[3:])
    with pytest.raises(CorpusError, match=r"fra\.txt line 4 has no tab"):
        read_tatoeba(bad, str(tmp_path / "hf"))


def test_error_invalid_utf8_names_member_and_line(tmp_path, lines):
    """A Latin-1 line in fra.txt: the error names the member, the zip and the line."""
    bad = "The café is open.\tLe café est ouvert.\tCC-BY".encode("latin-1")
    raw = [line.encode("utf-8") for line in lines[:6]] + [bad] + \
        [line.encode("utf-8") for line in lines[6:]]
    zip_path = tmp_path / "fra-eng.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("fra.txt", b"".join(line + b"\n" for line in raw))
    with pytest.raises(CorpusError) as info:
        read_tatoeba(zip_path, str(tmp_path / "hf"))
    message = str(info.value)
    offset = sum(len(line) + 1 for line in raw[:6]) + bad.index(b"\xe9")
    assert f"fra.txt in {zip_path} line 7 is not valid UTF-8: byte 0xe9 at byte offset " \
        f"{offset} of the file" in message, message
    assert "re-encode fra.txt as UTF-8" in message and "manythings.org" in message


def test_error_not_a_tatoeba_zip(tmp_path):
    not_zip = tmp_path / "fra-eng.zip"
    not_zip.write_text("hello\n")
    with pytest.raises(CorpusError, match="is not a zip archive"):
        read_tatoeba(not_zip, str(tmp_path / "hf"))
    other = tmp_path / "deu-eng.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("deu.txt", "Hi.\tHallo!\tCC-BY\n")
    with pytest.raises(CorpusError, match=r"holds no fra\.txt \(found: deu\.txt\)"):
        read_tatoeba(other, str(tmp_path / "hf"))


# ------------------------------------------------------------- datamodule
def make_datamodule(source, cache_dir, **kwargs) -> TranslationDataModule:
    settings = dict(src_lang="en", tgt_lang="fr", train_split="train", valid_split="valid",
                    test_split="test", valid_size=20, test_size=25, split_seed=0, vocab_size=50,
                    cache_dir=str(cache_dir))
    settings.update(kwargs)
    return TranslationDataModule(source=str(source), **settings)


@pytest.mark.slow
def test_datamodule_trains_tokenizer_and_caches(tatoeba_zip, hf_cache, tmp_path, monkeypatch):
    dm = make_datamodule(tatoeba_zip, tmp_path)
    dm.setup("fit")
    corpus = load(tatoeba_zip, hf_cache)
    assert dm.tokenizer.vocab_size == 50
    for name in SPLITS:
        assert len(dm.datasets[name]) == len(corpus[name])
        assert [t.tolist() for t in dm.datasets[name].tgt] == \
            dm.tokenizer.encode(corpus[name]["tgt"][:])
        if name != "train":
            assert dm.references[name] == corpus[name]["tgt"][:]
            assert dm.sources[name] == corpus[name]["src"][:]

    def no_training(*args, **kwargs):
        raise AssertionError("the tokenizer was retrained instead of read from the cache")

    monkeypatch.setattr(datamodule_mod, "train_tokenizer", no_training)
    again = make_datamodule(tatoeba_zip, tmp_path)
    assert again.cache_path == dm.cache_path
    again.setup("fit")
    assert again.tokenizer.model_proto == dm.tokenizer.model_proto
    for name in SPLITS:
        assert all(np.array_equal(a, b) for a, b in zip(again.datasets[name].src,
                                                        dm.datasets[name].src))
    # The split settings are part of the cache key.
    for change in ({"split_seed": 1}, {"valid_size": 21}, {"test_size": 24}):
        assert make_datamodule(tatoeba_zip, tmp_path, **change).cache_path != dm.cache_path


def test_shipped_config_uses_the_default_split():
    """scripts/evaluate.py reads the test split with load_parallel_corpus and no split
    settings, so it gets the config's test set only while the config keeps the defaults."""
    raw = yaml.safe_load((REPO / "configs" / "tatoeba_eng_fra.yaml").read_text())["data"]
    assert GroupedSplit(raw["valid_size"], raw["test_size"], raw["split_seed"]) == GroupedSplit()
    assert Path(raw["source"]).name == "fra-eng.zip"
    assert (raw["src_lang"], raw["tgt_lang"]) == ("en", "fr")


# -------------------------------------------------------------- real data
@pytest.mark.skipif(not REAL_ZIP.is_file(), reason=f"Tatoeba zip not found at {REAL_ZIP}")
@pytest.mark.slow
def test_real_zip_counts_and_no_leak(tmp_path):
    """The shared fra-eng.zip: the counts of shared/data/README.md, and the default
    grouped split (the one configs/tatoeba_eng_fra.yaml uses) keeps every English
    sentence in one split. Only reading and grouping, no tokenization."""
    pairs = read_tatoeba(REAL_ZIP, str(tmp_path))
    assert len(pairs) == 178_009  # every line is a non-empty pair
    english = pairs["en"][:]
    groups = group_ids(english)
    assert len(set(english)) == groups.max() + 1 == 125_045
    rows = grouped_split(groups, GroupedSplit())
    assert sum(len(r) for r in rows.values()) == 178_009
    assert len(np.unique(np.concatenate(list(rows.values())))) == 178_009
    in_split = {name: set(groups[rows[name]].tolist()) for name in SPLITS}
    assert not in_split["train"] & in_split["valid"]
    assert not in_split["train"] & in_split["test"]
    assert not in_split["valid"] & in_split["test"]
    assert 5000 <= len(rows["test"]) < 5000 + 32 and 5000 <= len(rows["valid"]) < 5000 + 32
