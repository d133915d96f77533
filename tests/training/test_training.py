"""Tests of the training stage: schedule, loss, CLI configs, and a tiny end-to-end run
(train -> checkpoint -> evaluate.py -> translate.py).

References: the schedule's formula, a hand-written label-smoothed cross-entropy,
sacreBLEU recomputed here, raw corpus files, and :func:`inference.decoding.translate`
as the reference for what training's validation and the scripts produce.
"""

from __future__ import annotations

import csv
import importlib
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import sacrebleu
import torch
import torch.nn.functional as F
import yaml

from torch.utils.data import DataLoader, TensorDataset

from conftest import RECIPES, checkpoint_every, load_script, read_raw
from data.batching import ParallelDataset, TokenBudgetBatchSampler, collate_batch
from data.datamodule import TranslationDataModule
from data.tokenizer import EOS_ID, PAD_ID
from model.config import TransformerConfig
from inference.checkpoint import CheckpointError, load_translator
from evaluation.metrics import corpus_scores, moses_lc_norm_tok
from inference.decoding import translate
from training.cli import CHECKPOINT_SECTIONS, resolve_config
from training.module import CHECKPOINT_FORMAT, TranslationModule, inverse_sqrt_schedule, lr_multiplier

REPO = Path(__file__).resolve().parents[2]
CONFIGS = RECIPES




# --------------------------------------------------------------- schedule
@pytest.mark.parametrize("warmup", [1, 4, 10, 300])
def test_inverse_sqrt_schedule(warmup):
    steps = range(3 * warmup + 5)
    values = [inverse_sqrt_schedule(s, warmup) for s in steps]
    for s, v in zip(steps, values):
        n = s + 1  # the multiplier of update s
        expected = n / warmup if n <= warmup else math.sqrt(warmup / n)
        assert v == pytest.approx(expected, rel=1e-12)
    assert values[warmup - 1] == pytest.approx(1.0)
    assert max(values) == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values[:warmup - 1], values[1:warmup]))  # linear warmup
    assert all(a > b for a, b in zip(values[warmup - 1:], values[warmup:]))  # then decay


@pytest.mark.parametrize("warmup,cooldown,total", [(4, 6, 20), (10, 1, 30), (3, 17, 20)])
def test_lr_cooldown_decays_linearly_to_zero(warmup, cooldown, total):
    values = [lr_multiplier(s, warmup, cooldown, total) for s in range(total + 2)]
    start = total - cooldown
    for s in range(start):  # before the cooldown: the plain schedule
        assert values[s] == inverse_sqrt_schedule(s, warmup)
    level = inverse_sqrt_schedule(start - 1, warmup)
    for s in range(start, total + 2):  # then a straight line from that level to 0 at `total`
        assert values[s] == pytest.approx(level * max(0.0, (total - s) / cooldown), abs=1e-15)
    assert values[total] == 0.0 and values[start] == pytest.approx(level)
    assert lr_multiplier(5, warmup, 0, None) == inverse_sqrt_schedule(5, warmup)


@pytest.mark.parametrize("warmup,total", [(4, 20), (300, 2450), (0, 7)])
def test_lr_cooldown_minus_one_decays_from_the_peak_over_every_update_after_warmup(warmup, total):
    # -1 is the cooldown that starts right after warmup: the same schedule as
    # cooldown = total - warmup, i.e. the peak (1.0) falling linearly to 0 at `total`.
    values = [lr_multiplier(s, warmup, -1, total) for s in range(total + 1)]
    assert values == [lr_multiplier(s, warmup, total - warmup, total) for s in range(total + 1)]
    for s in range(warmup, total + 1):
        assert values[s] == pytest.approx((total - s) / (total - warmup), abs=1e-12)
    assert max(values) == pytest.approx(1.0) and values[total] == 0.0


def test_lr_cooldown_minus_one_and_bad_values_are_config_errors():
    from model.config import ConfigError
    with pytest.raises(ConfigError, match="cooldown_steps=-1 needs .*trainer.max_steps"):
        lr_multiplier(0, 4, -1, None)
    with pytest.raises(ConfigError, match=r"warmup_steps=20, but trainer.max_steps=20 ends"):
        lr_multiplier(0, 20, -1, 20)
    with pytest.raises(ConfigError, match=r"cooldown_steps=-2 must be >= 0, or -1"):
        lr_multiplier(0, 4, -2, 20)
    with pytest.raises(ConfigError, match=r"cooldown_steps=-3 must be >= 0, or -1"):
        TranslationModule(TransformerConfig(vocab_size=20, num_hiddens=8, ffn_num_hiddens=16,
                                            num_heads=2, num_enc_blks=1, num_dec_blks=1),
                          cooldown_steps=-3)


def test_lr_cooldown_needs_max_steps():
    from model.config import ConfigError
    with pytest.raises(ConfigError, match="cooldown_steps=5 needs .*trainer.max_steps"):
        lr_multiplier(0, 4, 5, None)
    with pytest.raises(ConfigError, match=r"cooldown_steps=30 is longer than the 16 updates"):
        lr_multiplier(0, 4, 30, 20)


def test_optimizer_follows_schedule():
    module = TranslationModule(TransformerConfig(vocab_size=20, num_hiddens=8, ffn_num_hiddens=16,
                                                 num_heads=2, num_enc_blks=1, num_dec_blks=1),
                               lr=0.5, warmup_steps=4)
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    assert opt["lr_scheduler"]["interval"] == "step"
    for step in range(12):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(0.5 * inverse_sqrt_schedule(step, 4))
        optimizer.step()
        scheduler.step()


# ------------------------------------------------------------------- loss
def tiny_batch(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, vocab_size, size=n).tolist() + [EOS_ID] for n in (5, 2, 8, 3)]
    tgt = [rng.integers(4, vocab_size, size=n) for n in (4, 7, 1, 6)]
    ds = ParallelDataset([np.asarray(s) for s in src], tgt)
    return collate_batch([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_loss_matches_reference(label_smoothing):
    vocab = 37
    module = TranslationModule(TransformerConfig(vocab_size=vocab, num_hiddens=16,
                                                 ffn_num_hiddens=32, num_heads=2, num_enc_blks=1,
                                                 num_dec_blks=1, max_len=32),
                               label_smoothing=label_smoothing).eval()
    batch = tiny_batch(vocab)
    with torch.no_grad():
        loss, num_tokens = module.loss(batch)
        logits = module.model(batch["src"], batch["src_valid_len"], batch["tgt_in"])  # (B, T, V)

    real = batch["labels"] != PAD_ID  # (B, T)
    assert int(num_tokens) == int(real.sum())
    # Hand-written label smoothing over the real target tokens only, in float64:
    # (1 - eps) * NLL + eps * mean over the vocabulary of -log p.
    logp = torch.log_softmax(logits.double(), dim=-1)[real]  # (N, V)
    labels = batch["labels"][real]  # (N,)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)
    smooth = -logp.mean(dim=-1)
    reference = ((1 - label_smoothing) * nll + label_smoothing * smooth).mean()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    # ... and F.cross_entropy on the selected tokens (no ignore_index needed).
    reference_ce = F.cross_entropy(logits[real].double(), labels, label_smoothing=label_smoothing)
    assert loss.item() == pytest.approx(reference_ce.item(), rel=1e-5)


def test_loss_ignores_padding_logits():
    """Changing the labels' padded positions' inputs changes nothing of the loss."""
    vocab = 37
    module = TranslationModule(TransformerConfig(vocab_size=vocab, num_hiddens=16,
                                                 ffn_num_hiddens=32, num_heads=2, num_enc_blks=1,
                                                 num_dec_blks=1, max_len=32)).eval()
    batch = tiny_batch(vocab)
    with torch.no_grad():
        loss, _ = module.loss(batch)
        padded = batch["tgt_in"] == PAD_ID
        other = dict(batch, tgt_in=batch["tgt_in"].masked_fill(padded, 5))
        loss_other, _ = module.loss(other)
    assert loss_other.item() == pytest.approx(loss.item(), rel=1e-6)


# ------------------------------------------------------------- configs/CLI
@pytest.fixture(scope="module")
def train_script():
    return load_script("train")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
@pytest.mark.slow
def test_config_parses(config, train_script, tmp_path, monkeypatch):
    """Every shipped config builds its trainer, model and data module (nothing runs)."""
    monkeypatch.chdir(tmp_path)  # relative output folders of the config land here
    monkeypatch.setattr(sys, "argv", ["train.py"])
    raw = resolve_config("--config", str(config))  # the base under it, defaults filled in
    args = ["--config", str(config)]
    if raw["trainer"].get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        # A GPU recipe on a machine without one: build it on the CPU, all else as written.
        args += ["--trainer.accelerator=cpu"]
    cli = train_script.TranslationCLI(TranslationModule, TranslationDataModule,
                                      args=args, run=False)
    assert isinstance(cli.model, TranslationModule)
    assert isinstance(cli.datamodule, TranslationDataModule)
    # data.vocab_size is linked into the model.
    assert cli.model.config.vocab_size == cli.datamodule.vocab_size == raw["data"]["vocab_size"]
    for key, value in raw["model"].get("config", {}).items():
        if key != "vocab_size":  # linked from data.vocab_size when the model is built
            assert getattr(cli.model.config, key) == value, key
    for key, value in raw.get("data", {}).items():
        assert getattr(cli.datamodule.hparams, key) == value, key
    assert cli.trainer.max_epochs == raw["trainer"]["max_epochs"]


class _FallingBleu(L.LightningModule):
    """A linear layer whose logged ``val_bleu`` gets worse every epoch."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_bleu", 10.0 - self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_checkpoints_best_and_last(config, tmp_path):
    """The shipped checkpoint callbacks keep best.ckpt (highest val_bleu) and
    last.ckpt (the final weights), also when the last epochs do not improve."""
    raw = resolve_config("--config", str(config), "--trainer.default_root_dir", str(tmp_path))
    entries = raw["trainer"]["callbacks"] + [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": raw[name]}
        for name in CHECKPOINT_SECTIONS]
    callbacks = []
    for entry in entries:
        module_name, class_name = entry["class_path"].rsplit(".", 1)
        args = dict(entry.get("init_args", {}))
        callbacks.append(getattr(importlib.import_module(module_name), class_name)(**args))
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    model = _FallingBleu()
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, callbacks=callbacks,
                        logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        log_every_n_steps=1, default_root_dir=tmp_path)
    trainer.fit(model, loader, loader)
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir() if p.is_file()) == ["best.ckpt", "last.ckpt"]
    epochs = ckpt_dir / "epochs"  # configs that keep epoch checkpoints for averaging
    if epochs.is_dir():
        assert sorted(p.name for p in epochs.iterdir()) == [f"epoch={e:03d}.ckpt" for e in range(3)]
        assert torch.load(epochs / "epoch=002.ckpt", weights_only=True)["global_step"] == \
            trainer.global_step
    best = torch.load(ckpt_dir / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == trainer.global_step
    assert torch.equal(last["state_dict"]["layer.weight"], model.layer.weight.detach())


# ---------------------------------------------------------- end to end run
CPU_CONFIG = REPO / "configs" / "multi30k_cpu.yaml"
EPOCHS = 4
UPDATE_INTERVAL = 10  # the end-to-end run's checkpoint interval in updates
TINY = {"num_hiddens": 32, "ffn_num_hiddens": 64, "num_heads": 2,
        "num_enc_blks": 1, "num_dec_blks": 1}


@pytest.fixture(scope="module")
def trained(multi30k_small, tmp_path_factory, train_script):
    """Train a tiny model once on the 400-pair corpus with the CPU recipe; share its outputs.

    Only sizes, lengths, checkpoint intervals and the run directory are
    overridden: the callbacks are the shipped ones, their folders derived from
    the run directory.
    """
    tmp = tmp_path_factory.mktemp("e2e")
    run_dir = tmp / "run"
    override = {
        "trainer": {
            "default_root_dir": str(run_dir),
            "max_epochs": EPOCHS,
            "check_val_every_n_epoch": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            # fp32 so validation's decoding and translate() compute the same numbers.
            "precision": "32-true",
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run_dir)}},
        },
        # checkpoints every 10 updates instead of 50/100: this run has ~60
        **checkpoint_every(UPDATE_INTERVAL),
        # cooldown 0: the inverse-square-root schedule these few updates had under the
        # recipe's former 2150-update cooldown (the recipe's -1 would hold the lr near its
        # peak for all of them; tests/training/test_resume.py runs the recipe's -1 as it ships).
        "model": {"config": TINY, "warmup_steps": 10, "lr": 0.003, "cooldown_steps": 0},
        "data": {"source": str(multi30k_small), "cache_dir": str(tmp / "cache"),
                 "vocab_size": 400, "max_tokens": 1024},
    }
    override_path = tmp / "override.yaml"
    override_path.write_text(yaml.safe_dump(override))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setattr(sys, "argv", ["train.py"])
        cli = train_script.main(["fit", "--config", str(CPU_CONFIG),
                                 "--config", str(override_path)])
    metrics_files = list(run_dir.glob("lightning_logs/version_*/metrics.csv"))
    assert len(metrics_files) == 1, metrics_files
    with open(metrics_files[0], newline="") as f:
        rows = list(csv.DictReader(f))
    return {"cli": cli, "tmp": tmp, "run_dir": run_dir, "ckpt_dir": run_dir / "checkpoints",
            "rows": rows, "data": multi30k_small}


def logged(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.mark.slow
def test_training_run_outputs(trained):
    cli, rows = trained["cli"], trained["rows"]
    assert cli.trainer.current_epoch == EPOCHS
    assert cli.model.config.vocab_size == 400
    assert all(getattr(cli.model.config, k) == v for k, v in TINY.items())
    losses = logged(rows, "train_loss")
    assert len(losses) >= 30
    k = len(losses) // 5
    assert np.mean(losses[-k:]) < np.mean(losses[:k]) - 0.5, losses
    assert len(logged(rows, "val_bleu")) == EPOCHS  # one per epoch
    assert len(logged(rows, "val_loss")) == EPOCHS
    assert sorted(p.name for p in trained["ckpt_dir"].iterdir()) == ["best.ckpt", "last.ckpt",
                                                                     "updates"]
    # the last 4 checkpoints UPDATE_INTERVAL updates apart, kept for averaging
    steps = cli.trainer.global_step
    assert steps >= 5 * UPDATE_INTERVAL, steps  # 4 kept, older ones deleted
    assert sorted(p.name for p in (trained["ckpt_dir"] / "updates").iterdir()) == \
        [f"step={s:05d}.ckpt" for s in range(UPDATE_INTERVAL, steps + 1, UPDATE_INTERVAL)][-4:]


@pytest.mark.slow
def test_checkpoint_contents(trained):
    ckpt = torch.load(trained["ckpt_dir"] / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert ckpt["tokenizer_model"] == trained["cli"].datamodule.tokenizer.model_proto
    assert ckpt["hyper_parameters"]["config"]["vocab_size"] == 400
    assert ckpt["datamodule_hyper_parameters"]["source"] == str(trained["data"])
    assert ckpt["global_step"] == trained["cli"].trainer.global_step
    # best.ckpt is the epoch of the (first) highest validation BLEU.
    best = torch.load(trained["ckpt_dir"] / "best.ckpt", map_location="cpu", weights_only=True)
    bleus = logged(trained["rows"], "val_bleu")
    assert best["epoch"] == int(np.argmax(bleus))
    assert best["format"] == CHECKPOINT_FORMAT and "tokenizer_model" in best


@pytest.mark.slow
def test_load_translator(trained):
    translator = load_translator(trained["ckpt_dir"] / "last.ckpt")
    trained_model = trained["cli"].model.model
    assert not translator.model.training
    assert translator.tokenizer.model_proto == trained["cli"].datamodule.tokenizer.model_proto
    assert translator.hparams["max_len_a"] == trained["cli"].model.hparams.max_len_a
    assert translator.data_hparams["tgt_lang"] == "de"
    # last.ckpt holds the weights training ended with.
    ours, theirs = translator.model.state_dict(), trained_model.state_dict()
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if not torch.equal(ours[k], theirs[k].cpu())] == []
    best = load_translator(trained["ckpt_dir"] / "best.ckpt")
    assert best.model.config == translator.model.config


@pytest.mark.slow
def test_validation_matches_translate(trained):
    """The last validation's hypotheses and BLEU equal translate() on last.ckpt."""
    cli, rows = trained["cli"], trained["rows"]
    translator = load_translator(trained["ckpt_dir"] / "last.ckpt")
    sources = read_raw(trained["data"], "val", "en")
    references = read_raw(trained["data"], "val", "de")
    hyps = translate(translator.model, translator.tokenizer, sources,
                     translator.model.config.max_len,
                     decoding=translator.decoding())
    val_hyps = cli.model._val_hyps  # hypotheses of the last validation epoch, by index
    assert [val_hyps[i] for i in range(len(sources))] == hyps
    bleu = sacrebleu.corpus_bleu(hyps, [references]).score
    assert logged(rows, "val_bleu")[-1] == pytest.approx(bleu, rel=1e-5, abs=1e-5)
    chrf = sacrebleu.corpus_chrf(hyps, [references]).score
    assert logged(rows, "val_chrf")[-1] == pytest.approx(chrf, rel=1e-5, abs=1e-5)


def run_validate(trained, out: Path, *args: str) -> dict[str, float]:
    """``scripts/train.py validate`` on last.ckpt of the tiny run, as a user runs it;
    returns the metrics row that its CSV logger wrote and the console output."""
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "validate",
               "--config", str(CPU_CONFIG), "--config", str(trained["tmp"] / "override.yaml"),
               "--ckpt_path", str(trained["ckpt_dir"] / "last.ckpt"),
               "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(out),
               # Small validation batches, so the 60 sentences are split into several
               # batches (an odd number: DDP pads the count with a repeated batch).
               "--data.eval_max_tokens", str(DDP_EVAL_TOKENS), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=trained["tmp"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    (metrics,) = out.glob("lightning_logs/version_*/metrics.csv")
    with open(metrics, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_bleu")]
    assert len(rows) == 1, rows
    scores = {k: float(v) for k, v in rows[0].items() if v not in (None, "")}
    return scores, result.stdout + result.stderr


DDP_EVAL_TOKENS = 160


@pytest.mark.slow
def test_ddp_validation_bleu_is_corpus_bleu(trained, tmp_path):
    """Validation under DDP (2 CPU processes, gloo) scores the whole validation set
    once: its BLEU/chrF equal the single-process figures of the same checkpoint.

    The reference for "wrong" is also checked: averaging each process's own BLEU
    gives a different number here, so the test would catch that mistake.
    """
    single, _ = run_validate(trained, tmp_path / "single", "--trainer.devices", "1")
    ddp, log = run_validate(trained, tmp_path / "ddp", "--trainer.devices", "2",
                            "--trainer.strategy", "ddp")
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log, log[-2000:]
    assert ddp["val_bleu"] == pytest.approx(single["val_bleu"], abs=1e-6)
    assert ddp["val_chrf"] == pytest.approx(single["val_chrf"], abs=1e-6)

    translator = load_translator(trained["ckpt_dir"] / "last.ckpt")
    sources = read_raw(trained["data"], "val", "en")
    references = read_raw(trained["data"], "val", "de")
    hyps = translate(translator.model, translator.tokenizer, sources,
                     translator.model.config.max_len, decoding=translator.decoding())
    assert single["val_bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [references]).score, abs=1e-5)
    assert single["val_bleu"] > 0.0
    # Each rank's share, as the data module hands it out under DDP.
    valid = trained["cli"].datamodule.datasets["valid"]
    shares = []
    for rank in range(2):
        sampler = TokenBudgetBatchSampler(valid.src_lens(), valid.tgt_lens(), DDP_EVAL_TOKENS,
                                          shuffle=False, num_replicas=2, rank=rank)
        batches = list(sampler)
        assert len(batches) >= 2
        shares.append(sorted({i for batch in batches for i in batch}))
    assert sorted(set(shares[0]) | set(shares[1])) == list(range(len(sources)))
    for metric, key in ((sacrebleu.corpus_bleu, "val_bleu"), (sacrebleu.corpus_chrf, "val_chrf")):
        per_rank = [metric([hyps[i] for i in share], [[references[i] for i in share]]).score
                    for share in shares]
        assert abs(np.mean(per_rank) - single[key]) > 1e-3, (key, per_rank, single)


@pytest.mark.slow
def test_evaluate_script(trained, tmp_path, monkeypatch):
    import datasets

    # evaluate.py reads with datasets' default cache; keep it inside tmp_path.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    evaluate = load_script("evaluate")
    out = tmp_path / "eval"
    scores = evaluate.main(["--ckpt", str(trained["ckpt_dir"] / "best.ckpt"),
                            "--split", "test_2016_flickr", "--data", str(trained["data"]),
                            "--out", str(out), "--device", "cpu"])
    hyps = (out / "test_2016_flickr.de.hyp").read_text(encoding="utf-8").split("\n")
    assert hyps[-1] == ""  # the file ends with a newline
    hyps = hyps[:-1]
    assert len(hyps) == 50
    references = read_raw(trained["data"], "test_2016_flickr", "de")
    metrics = json.loads((out / "test_2016_flickr.metrics.json").read_text())
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [references]).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [references]).score)
    assert metrics["num_sentences"] == 50 and metrics["split"] == "test_2016_flickr"
    assert scores == metrics
    assert corpus_scores(hyps, references)["bleu_signature"] == metrics["bleu_signature"]
    # The papers' BLEU beside it: no official file for this 50-line copy, so the raw
    # references were tokenized with the same pipeline as the hypotheses.
    assert metrics["bleu_lc_norm_tok"] == pytest.approx(
        sacrebleu.corpus_bleu(moses_lc_norm_tok(hyps, "de"),
                              [moses_lc_norm_tok(references, "de")], tokenize="none").score)
    assert metrics["bleu_lc_norm_tok_references"].startswith("raw references")
    assert "tok:none" in metrics["bleu_lc_norm_tok_signature"]


@pytest.mark.slow
def test_evaluate_selects_checkpoint_and_decoding_on_val(trained, tmp_path, monkeypatch, capsys):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    evaluate = load_script("evaluate")
    ckpts = [str(trained["ckpt_dir"] / "best.ckpt"), str(trained["ckpt_dir"] / "last.ckpt")]
    common = ["--data", str(trained["data"]), "--device", "cpu", "--split", "test_2016_flickr"]
    scores = evaluate.main(["--ckpt", *ckpts, "--beam", "1", "2", "--lenpen", "0.6", "1.4",
                            "--lenpen-norm", "gnmt", "fairseq",
                            "--select-on", "val", "--out", str(tmp_path / "sel"), *common])
    table = scores["selected_on"]["candidates"]
    # greedy once per checkpoint (no length penalty), beam 2 with each alpha and normalization
    assert [(r["beam"], r["lenpen"], r["lenpen_norm"]) for r in table] == [
        (1, None, None), (2, 0.6, "gnmt"), (2, 0.6, "fairseq"), (2, 1.4, "gnmt"),
        (2, 1.4, "fairseq")] * 2
    best = max(table, key=lambda r: r["bleu"])
    assert scores["checkpoint"] == best["checkpoint"] and scores["split"] == "test_2016_flickr"
    assert scores["decoding_config"]["beam_size"] == best["beam"]
    assert scores["decoding_config"]["lenpen_norm"] == (best["lenpen_norm"] or "gnmt")
    selected = json.loads((tmp_path / "sel" / "selected.json").read_text())
    assert (selected["beam"], selected["lenpen_norm"]) == (best["beam"],
                                                            best["lenpen_norm"] or "gnmt")
    # each val row is what a plain evaluation of that candidate on val gives
    for row, norm in ((table[6], "gnmt"), (table[7], "fairseq")):
        plain = evaluate.main(["--ckpt", row["checkpoint"], "--beam", "2", "--lenpen", "0.6",
                               "--lenpen-norm", norm, "--out", str(tmp_path / "plain"),
                               *common[:-1], "val"])
        assert plain["bleu"] == pytest.approx(row["bleu"])
        assert plain["bleu_lc_norm_tok"] == pytest.approx(row["bleu_lc_norm_tok"])
        assert plain["decoding_config"]["lenpen_norm"] == norm
    for bad, message in ((["--ckpt", *ckpts, *common], "need --select-on"),
                         (["--ckpt", ckpts[0], "--lenpen-norm", "gnmt", "fairseq", *common],
                          "need --select-on"),
                         (["--ckpt", *ckpts, "--beam", "1", "2", "--select-on", "test_2016_flickr",
                           *common], "--select-on test_2016_flickr is also the split to report")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(bad)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_translate_script_keeps_lines(trained):
    ckpt = trained["ckpt_dir"] / "last.ckpt"
    lines = ["A man rides a bike.", "", "Two dogs play in the snow.", "   ",
             "A woman is reading a book on a bench.", ""]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "translate.py"), "--ckpt", str(ckpt),
         "--device", "cpu", "--batch-size", "4"],
        input="".join(line + "\n" for line in lines), capture_output=True, text=True,
        timeout=120, cwd=trained["tmp"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.split("\n")
    assert outputs[-1] == ""
    outputs = outputs[:-1]
    assert len(outputs) == len(lines)
    translator = load_translator(ckpt)
    for batch_start in (0, 4):  # --batch-size 4: two chunks, translated separately
        chunk = lines[batch_start: batch_start + 4]
        nonempty = [line for line in chunk if line.strip()]
        expected = iter(translate(translator.model, translator.tokenizer, nonempty,
                                  translator.model.config.max_len,
                                  decoding=translator.decoding()))
        for line, out in zip(chunk, outputs[batch_start: batch_start + 4]):
            assert out == (next(expected) if line.strip() else "")


# --------------------------------------------------------- checkpoint errors
def test_load_translator_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_translator(tmp_path / "nope.ckpt")


def test_load_translator_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"a": 1}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_translator(path)
    text = tmp_path / "text.ckpt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match="is damaged: not a PyTorch checkpoint but a text file"):
        load_translator(text)


@pytest.mark.slow
def test_load_translator_inconsistent(trained, tmp_path):
    ckpt = torch.load(trained["ckpt_dir"] / "last.ckpt", map_location="cpu", weights_only=True)
    no_tokenizer = {k: v for k, v in ckpt.items() if k != "tokenizer_model"}
    torch.save(no_tokenizer, tmp_path / "no_tok.ckpt")
    with pytest.raises(CheckpointError, match="no SentencePiece model"):
        load_translator(tmp_path / "no_tok.ckpt")
    ckpt["hyper_parameters"]["config"]["vocab_size"] = 401
    torch.save(ckpt, tmp_path / "mismatch.ckpt")
    with pytest.raises(CheckpointError, match="400 pieces.*vocab_size=401"):
        load_translator(tmp_path / "mismatch.ckpt")
    ckpt["hyper_parameters"]["config"]["vocab_size"] = 400
    ckpt["tokenizer_model"] = default_ids_tokenizer(tmp_path)
    torch.save(ckpt, tmp_path / "special_ids.ckpt")
    with pytest.raises(CheckpointError, match=r"pad/unk/bos/eos ids \(-1, 0, 1, 2\)"):
        load_translator(tmp_path / "special_ids.ckpt")
    ckpt["tokenizer_model"] = b"not a sentencepiece model"
    torch.save(ckpt, tmp_path / "garbage_tokenizer.ckpt")
    with pytest.raises(CheckpointError, match="embedded tokenizer does not fit"):
        load_translator(tmp_path / "garbage_tokenizer.ckpt")


def default_ids_tokenizer(tmp_path: Path) -> bytes:
    """A SentencePiece model with SentencePiece's default special ids
    (unk 0, bos 1, eos 2, no pad): not one this project's models were trained with."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    text = ["a man rides a bike", "two dogs play in the snow", "a woman reads a book"] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model,
                                   vocab_size=30, hard_vocab_limit=False)
    return model.getvalue()


def as_if_saved_on_gpu(path: Path, out: Path) -> None:
    """Rewrite a checkpoint file so that every tensor is recorded as living on
    ``cuda:0`` (what a checkpoint trained on a GPU looks like)."""
    import zipfile

    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(info, data)


@pytest.mark.slow
def test_checkpoint_from_a_gpu_loads_without_one(trained, tmp_path):
    gpu = tmp_path / "gpu.ckpt"
    as_if_saved_on_gpu(trained["ckpt_dir"] / "last.ckpt", gpu)
    if not torch.cuda.is_available():  # the file really asks for a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu, weights_only=True)
    translator = load_translator(gpu, "cpu")
    reference = load_translator(trained["ckpt_dir"] / "last.ckpt", "cpu")
    for (name, a), (_, b) in zip(translator.model.state_dict().items(),
                                 reference.model.state_dict().items()):
        assert a.device.type == "cpu" and torch.equal(a, b), name


@pytest.mark.slow
def test_scripts_refuse_bad_checkpoints(trained, tmp_path):
    """evaluate.py and translate.py exit with status 2 and one line saying what is
    wrong (no traceback, nothing on stdout)."""
    ckpt = torch.load(trained["ckpt_dir"] / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["tokenizer_model"] = default_ids_tokenizer(tmp_path)
    torch.save(ckpt, tmp_path / "special_ids.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    cases = {"special_ids.ckpt": "pad/unk/bos/eos ids", "foreign.ckpt": "not a checkpoint of this project",
             "missing.ckpt": "does not exist"}
    for (name, reason), script in itertools.product(cases.items(), ("evaluate", "translate")):
        result = subprocess.run(
            [sys.executable, str(REPO / "scripts" / f"{script}.py"), "--ckpt",
             str(tmp_path / name), "--device", "cpu"], input="A man rides a bike.\n",
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 2, (script, name, result.stderr[-2000:])
        assert f"{script}.py: error:" in result.stderr and reason in result.stderr, result.stderr
        assert str(tmp_path / name) in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""


@pytest.mark.slow
def test_translate_script_attention_plot_and_nbest(trained, tmp_path, capsys):
    """--attention-plot writes a PNG; --nbest 2 prints Moses lines whose best
    hypothesis equals translate() with beam search."""
    translate_script = load_script("translate")
    ckpt = str(trained["ckpt_dir"] / "last.ckpt")
    plot = tmp_path / "attention.png"
    translate_script.main(["--ckpt", ckpt, "--device", "cpu", "--beam", "2", "--nbest", "2",
                           "--attention-plot", str(plot), "A man rides a bike."])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("0 ||| ") for line in lines)
    scores = [float(line.rsplit("|||", 1)[1]) for line in lines]
    assert scores[0] >= scores[1]
    translator = load_translator(ckpt)
    best = translate(translator.model, translator.tokenizer, ["A man rides a bike."],
                     translator.model.config.max_len,
                     decoding=translator.decoding(beam_size=2))
    assert lines[0].split(" ||| ")[1] == best[0]
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
