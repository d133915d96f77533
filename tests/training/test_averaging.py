"""Tests of checkpoint averaging (training/averaging.py, scripts/average_checkpoints.py).

References: the elementwise mean ``(a + b) / 2`` of the inputs' tensors; a
model whose parameters were averaged by hand, translated with
:func:`inference.decoding.translate`; epoch checkpoints written by a real
Lightning ``ModelCheckpoint`` configured as in ``configs/multi30k_tiny.yaml``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from data.batching import ParallelDataset, collate_batch
from data.tokenizer import EOS_ID, train_tokenizer
from model.build import build_model
from model.config import TransformerConfig
from training.averaging import average_checkpoints, last_checkpoints, save_checkpoint, tied_keys
from inference.checkpoint import CheckpointError, load_translator
from inference.decoding import translate
from training.module import CHECKPOINT_FORMAT, TranslationModule

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "average_checkpoints.py"
TINY = {"num_hiddens": 16, "ffn_num_hiddens": 32, "num_heads": 2,
        "num_enc_blks": 1, "num_dec_blks": 1}
MAX_LEN = 32
VOCAB = 40  # fits the tiny corpus below with unigram and BPE alike

NOUNS = [("cat", "Katze"), ("dog", "Hund"), ("bird", "Vogel"), ("horse", "Pferd")]
VERBS = [("sleeps", "schläft"), ("runs", "rennt"), ("eats", "frisst")]
PLACES = [("in the park", "im Park"), ("at home", "zu Hause")]
PAIRS = [(f"The {n} {v} {p}.", f"Der {m} {w} {q}.")
         for n, m in NOUNS for v, w in VERBS for p, q in PLACES]
SOURCES = [en for en, _ in PAIRS]
#: The three tied keys beside ``model.src_embedding.weight`` (tie_embeddings=True).
TIED = ["model.src_embedding.weight", "model.tgt_embedding.weight",
        "model.encoder.embedding.weight", "model.decoder.embedding.weight"]
#: What a full Lightning checkpoint holds and an averaged one must not.
RUN_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "rng_states")


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SOURCES + [de for _, de in PAIRS], vocab_size=VOCAB, num_threads=1)


@pytest.fixture(scope="module")
def other_tokenizer():
    """Same vocabulary size, different SentencePiece model (BPE)."""
    return train_tokenizer(SOURCES + [de for _, de in PAIRS], vocab_size=VOCAB,
                           model_type="bpe", num_threads=1)


def make_module(tokenizer, seed: int, **config) -> TranslationModule:
    """A tiny Transformer (seeded), its tokenizer attached. Every parameter is
    its initial value plus noise, so no tensor (LayerNorm's ones, zero biases)
    is the same in two modules of different seeds."""
    torch.manual_seed(seed)
    module = TranslationModule(TransformerConfig(vocab_size=tokenizer.vocab_size, max_len=MAX_LEN,
                                                 **{"dropout": 0.0, **TINY, **config}),
                               warmup_steps=1, max_len_b=5)
    with torch.no_grad():
        for param in module.parameters():  # tied weights are one parameter
            param.add_(0.1 * torch.randn_like(param))
    module.set_tokenizer(tokenizer)
    return module


def write_checkpoint(module: TranslationModule, path: Path, global_step: int, epoch: int = 0,
                     **hparams) -> Path:
    """Save ``module`` as Lightning's ``dump_checkpoint`` does (full checkpoint,
    optimizer and loop states included), with ``on_save_checkpoint`` adding the
    project's format marker and tokenizer; ``hparams`` override saved ones."""
    ckpt = {"epoch": epoch, "global_step": global_step,
            "pytorch-lightning_version": L.__version__, "state_dict": module.state_dict(),
            "loops": {"fit_loop": {}}, "callbacks": {},
            "optimizer_states": [{"state": {}, "param_groups": []}], "lr_schedulers": [{}],
            "hyper_parameters": {**dict(module.hparams), **hparams}}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def epoch_run(tokenizer, tmp_path_factory) -> Path:
    """A run folder whose ``checkpoints/epochs/`` holds 3 epoch checkpoints
    written by a real 3-epoch (1 batch each) ``Trainer.fit`` with the epoch
    ``ModelCheckpoint`` of ``configs/multi30k_tiny.yaml``."""
    run = tmp_path_factory.mktemp("run")
    src = [np.asarray(ids + [EOS_ID]) for ids in tokenizer.encode(SOURCES)]
    tgt = [np.asarray(ids) for ids in tokenizer.encode([de for _, de in PAIRS])]
    loader = DataLoader(ParallelDataset(src, tgt), batch_size=len(PAIRS), collate_fn=collate_batch)
    module = make_module(tokenizer, seed=0)
    module.hparams.lr = 0.01
    epochs = ModelCheckpoint(dirpath=run / "checkpoints" / "epochs", filename="epoch={epoch:03d}",
                             auto_insert_metric_name=False, monitor="step", mode="max",
                             save_top_k=10, every_n_epochs=1, save_on_train_epoch_end=True,
                             save_weights_only=True)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False,
                        callbacks=[epochs], enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(run))
    trainer.fit(module, loader)
    return run


# ------------------------------------------------------------------ (a) the mean
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_average_is_the_elementwise_mean(tokenizer, tmp_path, tie):
    a = write_checkpoint(make_module(tokenizer, 1, tie_embeddings=tie), tmp_path / "a.ckpt", 10, 0)
    b = write_checkpoint(make_module(tokenizer, 2, tie_embeddings=tie), tmp_path / "b.ckpt", 20, 1,
                         beam_size=3)
    avg = average_checkpoints([a, b])
    sa, sb = load(a)["state_dict"], load(b)["state_dict"]
    assert avg["state_dict"].keys() == sa.keys()
    for key, value in avg["state_dict"].items():
        assert value.dtype == sa[key].dtype
        assert torch.equal(value, (sa[key] + sb[key]) / 2), key
        assert not torch.equal(value, sb[key]), key  # the inputs really differ
    # Everything else comes from the last (newest) checkpoint; no run state survives.
    assert avg["hyper_parameters"] == load(b)["hyper_parameters"]
    assert avg["hyper_parameters"]["beam_size"] == 3
    assert avg["global_step"] == 20 and avg["epoch"] == 1
    assert avg["format"] == CHECKPOINT_FORMAT
    assert avg["tokenizer_model"] == tokenizer.model_proto
    assert avg["averaged_from"] == ["a.ckpt", "b.ckpt"]
    assert not set(RUN_STATE) & set(avg)


def test_average_of_three_is_the_float64_mean(tokenizer, tmp_path):
    paths = [write_checkpoint(make_module(tokenizer, seed), tmp_path / f"{seed}.ckpt", seed)
             for seed in (1, 2, 3)]
    avg = average_checkpoints(paths)
    states = [load(p)["state_dict"] for p in paths]
    for key, value in avg["state_dict"].items():
        mean = sum(s[key].double() for s in states) / 3
        assert torch.equal(value, mean.float()), key
        torch.testing.assert_close(value, sum(s[key] for s in states) / 3)


# ------------------------------------------------------------ (b) tied weights
def test_tied_weights_stay_tied(epoch_run, tmp_path):
    paths = last_checkpoints(epoch_run / "checkpoints" / "epochs", 3)
    inputs = [load(p)["state_dict"] for p in paths]
    assert [sorted(group) for group in tied_keys(inputs[-1])] == [sorted(TIED)]
    avg = average_checkpoints(paths)
    state = avg["state_dict"]
    assert all(state[key] is state[TIED[0]] for key in TIED)
    mean = sum(s[TIED[0]] for s in inputs) / 3
    torch.testing.assert_close(state[TIED[0]], mean, rtol=1e-6, atol=0)
    assert not torch.equal(inputs[0][TIED[0]], inputs[-1][TIED[0]])  # training changed them

    out = save_checkpoint(avg, tmp_path / "averaged.ckpt", inputs=paths)
    assert [sorted(group) for group in tied_keys(load(out)["state_dict"])] == [sorted(TIED)]
    model = load_translator(out).model
    weight = model.src_embedding.weight
    assert model.tgt_embedding.weight is weight and model.decoder.embedding.weight is weight
    assert model.decoder.output is None  # the output projection is embedding.weight itself
    torch.testing.assert_close(weight.detach(), mean, rtol=1e-6, atol=0)


# -------------------------------------------------------------- (c) refusals
def _different(tokenizer, other_tokenizer, tmp_path, case: str) -> tuple[Path, str]:
    """A checkpoint that must not be averaged with ``make_module(tokenizer, 1)``'s,
    and the part of the error message that names the difference."""
    path = tmp_path / f"{case}.ckpt"
    if case == "num_hiddens":
        write_checkpoint(make_module(tokenizer, 2, num_hiddens=32), path, 2)
        return path, "model config num_hiddens=16 vs 32"
    if case == "dropout":
        write_checkpoint(make_module(tokenizer, 2, dropout=0.1), path, 2)
        return path, "model config dropout=0.0 vs 0.1"
    if case == "tokenizer":
        write_checkpoint(make_module(other_tokenizer, 2), path, 2)
        return path, "hold different SentencePiece models"
    if case == "missing_weight":
        write_checkpoint(make_module(tokenizer, 2), path, 2)
        ckpt = load(path)
        del ckpt["state_dict"]["model.encoder.final_ln.bias"]
        torch.save(ckpt, path)
        return path, "only in " + str(tmp_path / "ref.ckpt") + ": ['model.encoder.final_ln.bias']"
    if case == "integer_buffer":
        write_checkpoint(make_module(tokenizer, 2), path, 2)
        ckpt = load(path)
        ckpt["state_dict"]["model.counter"] = torch.tensor([7])
        torch.save(ckpt, path)
        return path, "differ in model.counter, a torch.int64 tensor that cannot be averaged"
    if case == "not_ours":
        torch.save({"state_dict": {}}, path)
        return path, f"{path} is not a checkpoint of this project"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["num_hiddens", "dropout", "tokenizer", "missing_weight",
                                  "integer_buffer", "not_ours"])
def test_different_models_are_refused(tokenizer, other_tokenizer, tmp_path, case):
    ref = write_checkpoint(make_module(tokenizer, 1), tmp_path / "ref.ckpt", 1)
    if case == "integer_buffer":
        ckpt = load(ref)
        ckpt["state_dict"]["model.counter"] = torch.tensor([6])
        torch.save(ckpt, ref)
    other, difference = _different(tokenizer, other_tokenizer, tmp_path, case)
    with pytest.raises(CheckpointError) as err:
        average_checkpoints([ref, other])
    message = str(err.value)
    assert difference in message
    if case != "not_ours":
        assert f"{ref} and {other}" in message


def test_equal_integer_tensors_are_kept(tokenizer, tmp_path):
    paths = []
    for seed in (1, 2):
        path = write_checkpoint(make_module(tokenizer, seed), tmp_path / f"{seed}.ckpt", seed)
        ckpt = load(path)
        ckpt["state_dict"]["model.counter"] = torch.tensor([6])
        torch.save(ckpt, path)
        paths.append(path)
    counter = average_checkpoints(paths)["state_dict"]["model.counter"]
    assert counter.dtype == torch.int64 and counter.tolist() == [6]


def test_a_file_twice_and_no_files_are_refused(tokenizer, tmp_path):
    path = write_checkpoint(make_module(tokenizer, 1), tmp_path / "a.ckpt", 1)
    with pytest.raises(CheckpointError, match="is listed twice"):
        average_checkpoints([path, tmp_path / "." / "a.ckpt"])
    with pytest.raises(CheckpointError, match="no checkpoints to average"):
        average_checkpoints([])


# ------------------------------------------------------- (d) it loads and translates
def test_averaged_checkpoint_translates_as_hand_averaged_model(tokenizer, tmp_path):
    modules = [make_module(tokenizer, seed) for seed in (1, 2)]
    paths = [write_checkpoint(m, tmp_path / f"{i}.ckpt", i) for i, m in enumerate(modules)]
    out = save_checkpoint(average_checkpoints(paths), tmp_path / "averaged.ckpt", inputs=paths)
    translator = load_translator(out)

    reference = build_model(modules[0].config).eval()
    params = [dict(m.model.named_parameters()) for m in modules]
    with torch.no_grad():
        for name, param in reference.named_parameters():  # tied weights listed once
            param.copy_((params[0][name] + params[1][name]) / 2)
    for key, value in reference.state_dict().items():
        assert torch.equal(translator.model.state_dict()[key], value), key

    decoding = translator.decoding()
    expected = translate(reference, tokenizer, SOURCES, MAX_LEN, decoding=decoding)
    assert translate(translator.model, translator.tokenizer, SOURCES, MAX_LEN,
                     decoding=decoding) == expected
    assert any(expected)


# --------------------------------------------------------------- (e) the script
def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


@pytest.mark.slow
def test_script_averages_a_run(epoch_run):
    result = run_script("--run", str(epoch_run), "--last", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    out = epoch_run / "checkpoints" / "averaged.ckpt"
    expected = last_checkpoints(epoch_run / "checkpoints" / "epochs", 2)
    assert [p.name for p in expected] == ["epoch=001.ckpt", "epoch=002.ckpt"]
    for path in (*expected, out):
        assert str(path) in result.stdout
    written = load(out)
    assert written["averaged_from"] == [p.name for p in expected]
    for key, value in average_checkpoints(expected)["state_dict"].items():
        assert torch.equal(written["state_dict"][key], value), key
    load_translator(out)


@pytest.mark.slow
def test_script_error_is_one_line_and_writes_nothing(tokenizer, tmp_path):
    good = write_checkpoint(make_module(tokenizer, 1), tmp_path / "good.ckpt", 1)
    bad = write_checkpoint(make_module(tokenizer, 2, dropout=0.1), tmp_path / "bad.ckpt", 2)
    out = tmp_path / "out" / "averaged.ckpt"
    result = run_script("--inputs", str(good), str(bad), "--out", str(out))
    assert result.returncode == 2, result.stderr[-4000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("average_checkpoints.py: error: "), lines
    assert "dropout=0.0 vs 0.1" in lines[0] and str(bad) in lines[0]
    assert not out.exists() and not out.parent.exists()


def test_script_refuses_to_overwrite_an_input_or_average_too_few(tokenizer, tmp_path, epoch_run):
    script = _load_script()
    a = write_checkpoint(make_module(tokenizer, 1), tmp_path / "a.ckpt", 1)
    b = write_checkpoint(make_module(tokenizer, 2), tmp_path / "b.ckpt", 2)
    before = b.read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(f"refusing to overwrite {b}")):
        script.main(["--inputs", str(a), str(b), "--out", str(b)])
    assert b.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "b.ckpt"]  # no temp file
    with pytest.raises(CheckpointError, match="holds 3 checkpoints, fewer than the 5 asked for; "
                                              "average those with --last 3"):
        script.main(["--run", str(epoch_run), "--last", "5"])


def _load_script():
    import importlib

    return importlib.import_module("commands.average_checkpoints")


# ------------------------------------------------------ (f) which checkpoints
def test_last_checkpoints_order_by_global_step(tokenizer, tmp_path):
    module = make_module(tokenizer, 1)
    # Names disagree with the training order on purpose; b and z tie at step 20.
    for name, step in (("epoch=002", 30), ("a", 10), ("z", 20), ("b", 20)):
        write_checkpoint(module, tmp_path / f"{name}.ckpt", step)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    averaged = average_checkpoints([tmp_path / "a.ckpt", tmp_path / "epoch=002.ckpt"])
    save_checkpoint(averaged, tmp_path / "averaged.ckpt")  # skipped: not a training checkpoint

    assert [p.name for p in last_checkpoints(tmp_path, 3)] == ["b.ckpt", "z.ckpt", "epoch=002.ckpt"]
    assert [p.name for p in last_checkpoints(tmp_path, 4)] == \
        ["a.ckpt", "b.ckpt", "z.ckpt", "epoch=002.ckpt"]
    with pytest.raises(CheckpointError) as err:
        last_checkpoints(tmp_path, 5)
    assert str(err.value) == (f"{tmp_path} holds 4 checkpoints, fewer than the 5 asked for; "
                              f"average those with --last 4")


def test_last_checkpoints_of_an_empty_or_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path} holds no training checkpoints")):
        last_checkpoints(tmp_path, 1)
    with pytest.raises(CheckpointError, match="is not a folder"):
        last_checkpoints(tmp_path / "missing", 1)
    with pytest.raises(CheckpointError, match="ask for at least 1"):
        last_checkpoints(tmp_path, 0)
