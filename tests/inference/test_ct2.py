"""CTranslate2 export (``inference/ct2.py``, ``scripts/export_ctranslate2.py``):
the exported model computes what ours computes.

References: our own :class:`model.Transformer` on the same weights — its
encoder output, its per-token log-probabilities of a target
(teacher-forced), and its greedy and beam outputs through
:meth:`inference.checkpoint.Translator.translate_ids`; for the scripts,
``translate.py`` on the PyTorch checkpoint.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")

from torch.utils.data import DataLoader  # noqa: E402

from data.batching import ParallelDataset, collate_batch  # noqa: E402
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_tokenizer  # noqa: E402
from model.config import TransformerConfig  # noqa: E402
from model.rnn import RNNConfig  # noqa: E402
from inference.checkpoint import CheckpointError, load_translator  # noqa: E402
from inference.ct2 import (CTranslate2Error, encoder_spec, export_ctranslate2,  # noqa: E402
                          load_ctranslate2)
from inference.decoding import DecodingConfig  # noqa: E402
from training.module import TranslationModule  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = {"num_hiddens": 32, "ffn_num_hiddens": 64, "num_heads": 4, "num_enc_blks": 2,
        "num_dec_blks": 2, "dropout": 0.0}
MAX_LEN = 48
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def read(directory: Path, split: str, lang: str) -> list[str]:
    with gzip.open(directory / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


@pytest.fixture(scope="module")
def corpus(multi30k_small):
    en, de = read(multi30k_small, "train", "en"), read(multi30k_small, "train", "de")
    return en, de, train_tokenizer(en + de, vocab_size=400, num_threads=1)


def write_checkpoint(corpus, path: Path, seed: int = 0, train_steps: int = 0, **config) -> Path:
    """A tiny model in the project's checkpoint format. Every parameter is its
    initial value plus noise (so LayerNorm gains, biases and the output layer
    all matter, and no two logits tie); with ``train_steps``, then trained
    that many updates on the 400 pairs (so that outputs end with EOS, as a
    real model's do, instead of running into the length limit)."""
    en, de, tokenizer = corpus
    torch.manual_seed(seed)
    settings = dict(warmup_steps=1, max_len_a=1.2, max_len_b=6)
    if config.get("arch") == "rnn":
        module = TranslationModule(rnn=RNNConfig(vocab_size=tokenizer.vocab_size, num_hiddens=32,
                                                 num_layers=1, max_len=MAX_LEN), **settings)
    else:
        module = TranslationModule(TransformerConfig(vocab_size=tokenizer.vocab_size,
                                                     max_len=MAX_LEN, **{**TINY, **config}),
                                   lr=0.01, **settings)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.3 * torch.randn_like(param))
    module.set_tokenizer(tokenizer)
    if train_steps:
        src = [np.asarray(ids[: MAX_LEN - 1] + [EOS_ID]) for ids in tokenizer.encode(en)]
        tgt = [np.asarray(ids[: MAX_LEN - 1]) for ids in tokenizer.encode(de)]
        loader = DataLoader(ParallelDataset(src, tgt), batch_size=32, shuffle=True,
                            collate_fn=collate_batch)
        L.Trainer(max_steps=train_steps, accelerator="cpu", devices=1, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=str(path.parent)
                  ).fit(module, loader)
    ckpt = {"epoch": 0, "global_step": 1, "pytorch-lightning_version": L.__version__,
            "state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "datamodule_hyper_parameters": {"src_lang": "en", "tgt_lang": "de"}}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module", params=["pre-LN", "post-LN"])
def exported(request, corpus, tmp_path_factory):
    """(checkpoint, PyTorch translator, CTranslate2 float32 translator)."""
    tmp = tmp_path_factory.mktemp("ct2")
    ckpt = write_checkpoint(corpus, tmp / "tiny.ckpt", train_steps=60,
                            norm_first=request.param == "pre-LN")
    ours = load_translator(ckpt)
    export_ctranslate2(ours, tmp / "ct2", "float32")
    return ckpt, ours, load_ctranslate2(tmp / "ct2", threads=1)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.slow
def test_encoder_output_matches(exported, corpus, tmp_path):
    """The encoder, exported alone (the same mapping code), run by
    ``ctranslate2.Encoder``: its output equals ours at every valid position."""
    _, ours, _ = exported
    en, _, tokenizer = corpus
    (tmp_path / "encoder").mkdir()
    spec = encoder_spec(ours.model, tokenizer)
    spec.validate()
    spec.optimize(quantization="float32")
    spec.save(str(tmp_path / "encoder"))
    encoder = ctranslate2.Encoder(str(tmp_path / "encoder"), intra_threads=1)
    ids = [seq[:20] + [EOS_ID] for seq in tokenizer.encode(en[:8])]
    got = np.array(encoder.forward_batch([[tokenizer.sp.id_to_piece(i) for i in seq]
                                          for seq in ids]).last_hidden_state)
    lens = torch.tensor([len(seq) for seq in ids])
    src = torch.full((len(ids), int(lens.max())), PAD_ID)
    for row, seq in enumerate(ids):
        src[row, :len(seq)] = torch.tensor(seq)
    with torch.no_grad():
        want = ours.model.encode(src, lens).numpy()
    for row, n in enumerate(lens.tolist()):
        assert relative_error(got[row, :n], want[row, :n]) <= 1e-4


def our_log_probs(model, src_ids: list[int], tgt_ids: list[int]) -> torch.Tensor:
    """Teacher-forced log P(y_t | y_<t, x) ``(T, V)`` of our model, one sentence."""
    src = torch.tensor([src_ids + [EOS_ID]])
    with torch.no_grad():
        enc = model.encode(src, torch.tensor([src.shape[1]]))
        logits = model.decode(torch.tensor([[BOS_ID] + tgt_ids]), enc, torch.tensor([src.shape[1]]))
    return torch.log_softmax(logits[0].float(), dim=-1)


def test_first_step_and_scored_log_probs_match(exported, corpus):
    """The first decoding step's whole log-probability vector
    (``return_logits_vocab``), and the log-probabilities of every token of
    a reference (``score_batch``), equal ours (relative error <= 1e-4)."""
    _, ours, ct2 = exported
    en, de, tokenizer = corpus
    sp = tokenizer.sp
    for src_ids, tgt_ids in zip(tokenizer.encode(en[:4]), tokenizer.encode(de[:4])):
        src_ids, tgt_ids = src_ids[:30], tgt_ids[:30]
        want = our_log_probs(ours.model, src_ids, tgt_ids + [EOS_ID])  # (T + 1, V)
        first = ct2.engine.translate_batch([[sp.id_to_piece(i) for i in src_ids]], beam_size=1,
                                           max_decoding_length=1, min_decoding_length=0,
                                           return_logits_vocab=True)
        logits = torch.from_numpy(np.array(first[0].logits[0][0])).float()
        got = torch.log_softmax(logits, dim=-1)
        assert relative_error(got.numpy(), want[0].numpy()) <= 1e-4
        scored = ct2.engine.score_batch([[sp.id_to_piece(i) for i in src_ids]],
                                        [[sp.id_to_piece(i) for i in tgt_ids]])[0]
        ours_per_token = want.gather(1, torch.tensor(tgt_ids + [EOS_ID])[:, None])[:, 0]
        assert relative_error(np.array(scored.log_probs), ours_per_token.numpy()) <= 1e-4


@pytest.mark.parametrize("decoding", [
    DecodingConfig(beam_size=1),
    DecodingConfig(beam_size=1, max_len_a=0.0, max_len_b=3),  # every output cut by the limit
    DecodingConfig(beam_size=4, alpha=1.0, nbest=2),
], ids=["greedy", "greedy-limit", "beam4"])
@pytest.mark.slow
def test_outputs_equal_ours(exported, corpus, decoding):
    """Greedy outputs are identical to ours on a batch of 40 sentences, also
    when the per-sentence length limit cuts them; beam search, with the
    n-best re-ranked by our GNMT penalty, gives our best hypothesis and
    score on at least 90% of them (the search itself is CTranslate2's)."""
    _, ours, ct2 = exported
    en, _, tokenizer = corpus
    ids = tokenizer.encode(en[:40])
    want = ours.translate_ids(ids, decoding)
    got = ct2.translate_ids(ids, decoding)
    assert [len(n) for n in got] == [decoding.nbest] * len(ids)
    if decoding.beam_size == 1:
        assert [n[0].ids for n in got] == [n[0].ids for n in want]
        assert [n[0].text for n in got] == [n[0].text for n in want]
        assert all(n[0].score is None for n in got)
        return
    # Sentences whose best hypothesis ends before the length limit (a
    # barely trained model loops on others): there the limit rules agree.
    caps = [min(int((len(seq) + 1) * decoding.max_len_a + decoding.max_len_b), MAX_LEN - 1)
            for seq in ids]
    free = [k for k, cap in enumerate(caps) if len(want[k][0].ids) < cap]
    same = [got[k][0].ids == want[k][0].ids
            and abs(got[k][0].score - want[k][0].score) <= 1e-3 * abs(want[k][0].score)
            for k in free]
    assert len(free) >= 10 and sum(same) >= 0.9 * len(free)
    assert all(n[0].score >= n[1].score for n in got)  # best first


def test_refuses_what_ctranslate2_cannot_run(corpus, tmp_path):
    """Additive attention and the GRU baseline: a clear error, nothing written."""
    for name, config in (("additive", {"attention": "additive"}), ("rnn", {"arch": "rnn"})):
        translator = load_translator(write_checkpoint(corpus, tmp_path / f"{name}.ckpt",
                                                      **config))
        with pytest.raises(CTranslate2Error, match="CTranslate2"):
            export_ctranslate2(translator, tmp_path / f"{name}_ct2", where=f"{name}.ckpt")
        assert not (tmp_path / f"{name}_ct2").exists()


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=ENV)


@pytest.mark.slow
def test_scripts_export_and_translate(corpus, tmp_path):
    """``export_ctranslate2.py`` then ``translate.py --ckpt DIR``: the same lines
    as ``translate.py`` on the checkpoint (greedy), and the n-best format;
    refusals exit 2 with one line and leave files alone; int8 on load runs;
    wrong engine/path combinations are named."""
    en, _, _ = corpus
    ckpt = write_checkpoint(corpus, tmp_path / "tiny.ckpt")
    out = tmp_path / "ct2"
    done = run("export_ctranslate2.py", "--ckpt", ckpt, "--out", out)
    assert done.returncode == 0, done.stderr
    assert {"model.bin", "config.json", "shared_vocabulary.json", "sentencepiece.model",
            "translation_settings.json"} <= {p.name for p in out.iterdir()}
    (tmp_path / "in.en").write_text("\n".join(en[:12] + [""] + en[12:20]) + "\n")
    base = ["--input", tmp_path / "in.en", "--device", "cpu"]
    want = run("translate.py", "--ckpt", ckpt, *base)
    got = run("translate.py", "--ckpt", out, "--threads", "1", *base)
    assert want.returncode == 0 and got.returncode == 0, got.stderr
    assert got.stdout == want.stdout and len(got.stdout.splitlines()) == 21
    nbest = run("translate.py", "--model", out, "--engine", "ctranslate2", "--beam", "3",
                "--nbest", "2", *base)
    assert nbest.returncode == 0, nbest.stderr
    assert len(nbest.stdout.splitlines()) == 2 * 20  # the empty line gives none

    before = (out / "model.bin").read_bytes()
    again = run("export_ctranslate2.py", "--ckpt", ckpt, "--out", out)
    assert again.returncode == 2 and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert (out / "model.bin").read_bytes() == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    busy = run("export_ctranslate2.py", "--ckpt", ckpt, "--out", tmp_path / "notes", "--force")
    assert busy.returncode == 2 and "non-empty directory" in busy.stderr
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_translator(tmp_path / "notes")
    with pytest.raises(CheckpointError, match="export_ctranslate2.py --ckpt"):
        load_translator(ckpt, engine="ctranslate2")
    with pytest.raises(CheckpointError, match="--threads 2: CTranslate2 options"):
        load_translator(ckpt, threads=2)
    with pytest.raises(CheckpointError, match="--engine pytorch needs a checkpoint file"):
        load_translator(out, engine="pytorch")
    int8 = load_translator(out, compute_type="int8", threads=1)
    assert int8.engine.compute_type.startswith("int8")
    assert len(int8.translate_ids(int8.tokenizer.encode(en[:5]), int8.decoding())) == 5


def test_load_translator_names_a_plain_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_translator(tmp_path)


@pytest.mark.slow
def test_benchmark_decode_ctranslate2_rows(corpus, multi30k_small, tmp_path):
    """``benchmark_decode.py --ctranslate2``: one row per compute type and beam,
    beside ours; float32 greedy is ours exactly (100% same output, same BLEU)."""
    import json

    import commands.benchmark_decode as bench
    ckpt = write_checkpoint(corpus, tmp_path / "tiny.ckpt")
    rows = bench.main(["--ckpt", str(ckpt), "--data", str(multi30k_small), "--split",
                       "test_2016_flickr", "--beams", "1,3", "--ctranslate2", "--threads", "1",
                       "--device", "cpu", "--json", str(tmp_path / "rows.json")])
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    ct2 = [r for r in rows if r["engine"].startswith("CTranslate2")]
    assert [(r["engine"].split(",")[0].split("_")[0], r["decoding"]) for r in ct2] == [
        ("CTranslate2 float32", "greedy"), ("CTranslate2 float32", "beam 3 lenpen 1.0"),
        ("CTranslate2 int8", "greedy"), ("CTranslate2 int8", "beam 3 lenpen 1.0")]
    ours_greedy = next(r for r in rows if r["engine"] == "ours" and r["decoding"] == "greedy"
                       and r["cache"])
    assert ct2[0]["same_as_ours"] == "100.0% same as ours"
    assert ct2[0]["bleu"] == ours_greedy["bleu"]
    assert all(r["sentences"] == 50 and r["speedup_vs_ours"] > 0 for r in ct2)
