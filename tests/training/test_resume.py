"""Robustness of training: resume after SIGKILL, crash-safe checkpoint files,
non-finite losses, and run-to-run determinism.

References: an uninterrupted run with the same config and seed (for the
resumed run and for determinism), the checkpoint file before a killed save,
and the weights/optimizer state before an update that must be skipped.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from conftest import base_callbacks, checkpoint_every
from data.datamodule import TranslationDataModule
from model.config import TransformerConfig
from inference.checkpoint import load_translator
from training.checkpoint_io import AtomicCheckpointIO
from training.module import NonFiniteLossError, TranslationModule

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "multi30k_cpu.yaml"
TINY = {"num_hiddens": 32, "ffn_num_hiddens": 64, "num_heads": 2,
        "num_enc_blks": 1, "num_dec_blks": 1}
EPOCHS = 3
INTERVAL = 4  # step-checkpoint interval of the test runs
KILL_AT = 14  # not a multiple of INTERVAL: the run loses the updates after step 12

KILLER = '''
import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL this process once ``step`` optimizer updates are done (no clean exit)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def write_override(path: Path, run_dir: Path, data: Path, cache: Path,
                   kill_at: int | None = None) -> Path:
    """The shipped CPU recipe with tiny sizes, the test corpus, the run under
    ``run_dir`` and step checkpoints every ``INTERVAL`` updates."""
    killer = [{"class_path": "killer.KillAtStep", "init_args": {"step": kill_at}}] \
        if kill_at is not None else []
    override = {
        "trainer": {"default_root_dir": str(run_dir), "max_epochs": EPOCHS,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1, "precision": "32-true",
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(run_dir)}},
                    "callbacks": base_callbacks(*killer)},
        **checkpoint_every(INTERVAL),
        "model": {"config": TINY, "warmup_steps": 10, "lr": 0.003},
        "data": {"source": str(data), "cache_dir": str(cache), "vocab_size": 400,
                 "max_tokens": 1024},
    }
    path.write_text(yaml.safe_dump(override))
    return path


def train(override: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python scripts/train.py fit --config configs/multi30k_cpu.yaml --config override``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "fit",
                           "--config", str(CPU_CONFIG), "--config", str(override), *extra],
                          capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def val_bleu(run_dir: Path) -> list[float]:
    """Validation BLEU per epoch over every logged version of a run, in order."""
    bleus = []
    for metrics in sorted(run_dir.glob("lightning_logs/version_*/metrics.csv")):
        with open(metrics, newline="") as f:
            bleus += [float(r["val_bleu"]) for r in csv.DictReader(f) if r.get("val_bleu")]
    return bleus


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key],
                                   rtol=0, atol=1e-6, msg=key)
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    for index, state in opt_a["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(value, opt_b["state"][index][name], rtol=0, atol=1e-6)
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.fixture(scope="module")
def runs(multi30k_small, tmp_path_factory):
    """Three runs of the same config and seed: two uninterrupted, one SIGKILLed at
    step ``KILL_AT`` and resumed with the documented command."""
    tmp = tmp_path_factory.mktemp("resume")
    (tmp / "killer.py").write_text(KILLER)
    cache = tmp / "cache"
    out = {}
    for name in ("first", "second"):
        override = write_override(tmp / f"{name}.yaml", tmp / name, multi30k_small, cache)
        result = train(override, tmp)
        assert result.returncode == 0, result.stderr[-4000:]
        out[name] = tmp / name
    killed = write_override(tmp / "killed.yaml", tmp / "killed", multi30k_small, cache,
                            kill_at=KILL_AT)
    result = train(killed, tmp)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-4000:])
    out["after_kill"] = load(tmp / "killed" / "checkpoints" / "last.ckpt")
    resumed = write_override(tmp / "resumed.yaml", tmp / "killed", multi30k_small, cache)
    result = train(resumed, tmp, "--ckpt_path", "last")  # the README's resume command
    assert result.returncode == 0, result.stderr[-4000:]
    out["resumed"] = tmp / "killed"
    out["resume_log"] = result.stdout + result.stderr
    return out


@pytest.mark.slow
def test_killed_run_resumes_mid_epoch_where_it_stopped(runs):
    """The SIGKILLed run left the step-12 checkpoint, in the middle of an epoch
    with its data position recorded; resumed, it ends exactly where the
    uninterrupted run ends (weights, Adam moments, schedule, step, val BLEU)."""
    ckpt = runs["after_kill"]
    assert ckpt["global_step"] == KILL_AT - KILL_AT % INTERVAL  # lost only 2 updates
    (position,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert position["batches"] > 0, position  # mid-epoch: the data position matters
    assert "Restored all states from the checkpoint" in runs["resume_log"]

    first = load(runs["first"] / "checkpoints" / "last.ckpt")
    resumed = load(runs["resumed"] / "checkpoints" / "last.ckpt")
    assert_same_training_state(resumed, first)
    assert resumed["global_step"] > ckpt["global_step"]
    assert val_bleu(runs["resumed"])[-1] == pytest.approx(val_bleu(runs["first"])[-1], abs=1e-9)


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_run(runs):
    """Determinism on CPU: two runs of one config and seed give the same
    validation BLEU every epoch and the same final weights."""
    bleus = val_bleu(runs["first"])
    assert len(bleus) == EPOCHS
    assert val_bleu(runs["second"]) == bleus
    assert_same_training_state(load(runs["second"] / "checkpoints" / "last.ckpt"),
                               load(runs["first"] / "checkpoints" / "last.ckpt"))


def test_resume_needs_the_data_position():
    """The check above can fail: without the saved data position, a run resumed
    mid-epoch trains on other batches than the uninterrupted one."""
    from data.batching import ParallelDataset, ResumableDataLoader, TokenBudgetBatchSampler
    import numpy as np

    lens = np.arange(1, 41)
    ds = ParallelDataset([np.ones(n, dtype=np.int32) for n in lens],
                         [np.ones(n, dtype=np.int32) for n in lens])

    def loader():
        return ResumableDataLoader(ds, TokenBudgetBatchSampler(lens + 1, lens + 1, 60, seed=3),
                                   collate_fn=lambda items: [i for i, _, _ in items])

    whole = list(loader())
    interrupted = loader()
    it = iter(interrupted)
    seen = [next(it) for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "batches": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + list(resumed) == whole
    assert list(resumed) == whole  # the skip applies to the resumed iteration only
    fresh = loader()  # no state loaded: starts the epoch again
    assert seen + list(fresh) != whole
    other_epoch = loader()
    other_epoch.load_state_dict(state)
    other_epoch.batch_sampler.set_epoch(1)  # the saved position was in epoch 0
    assert len(list(other_epoch)) == len(loader())


# ------------------------------------------------------- crash-safe saving
def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_dies(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    assert load(path)["global_step"] == 1

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # bytes on disk, then the process is gone
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    ckpt = load(path)  # still the complete old checkpoint
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    io.save_checkpoint({"global_step": 3, "w": torch.zeros(3)}, path)
    assert load(path)["global_step"] == 3
    # The same permissions as a file written in place (not mkstemp's private 0600).
    reference = tmp_path / "plain"
    reference.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


@pytest.mark.slow
def test_atomic_checkpoint_io_survives_sigkill_during_save(tmp_path):
    """A process SIGKILLed in the middle of writing a large checkpoint leaves the
    previous file readable (plain Lightning writes the target in place)."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        from training.checkpoint_io import AtomicCheckpointIO
        real_save = torch.save
        def save(obj, f, *a, **k):
            f.write(b"x" * 1_000_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save
        AtomicCheckpointIO().save_checkpoint({{"global_step": 2}}, {str(path)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert load(path)["global_step"] == 1
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size >= 1_000_000  # the dead write
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)  # cleans it up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert load(path)["global_step"] == 3


# ------------------------------------------------------- non-finite losses
class PoisonedLoss(TranslationModule):
    """The real module, whose loss is NaN at the given global steps (training only)."""

    def __init__(self, *args, bad_steps=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.bad_steps = set(bad_steps)

    def loss(self, batch):
        loss, tokens = super().loss(batch)
        if self.training and self.global_step in self.bad_steps:
            loss = loss * float("nan")
        return loss, tokens


@pytest.fixture(scope="module")
def tiny_data(multi30k_small, tmp_path_factory):
    data = TranslationDataModule(source=str(multi30k_small), vocab_size=400, max_tokens=1024,
                                 cache_dir=str(tmp_path_factory.mktemp("cache")))
    data.setup()
    return data


def fit(module, data, tmp_path, max_steps, callbacks=()):
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", filename="last", every_n_train_steps=2,
        save_top_k=1, enable_version_counter=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, limit_val_batches=0,
                        gradient_clip_val=1.0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, plugins=[AtomicCheckpointIO()],
                        callbacks=[checkpoint, *callbacks], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    return trainer


def tiny_module(**kwargs):
    return PoisonedLoss(TransformerConfig(**TINY, vocab_size=400), warmup_steps=4, **kwargs)


def test_nonfinite_loss_stops_naming_step_and_last_good_checkpoint(tiny_data, tmp_path):
    module = tiny_module(bad_steps={5})
    with pytest.raises(NonFiniteLossError) as err:
        fit(module, tiny_data, tmp_path, max_steps=8)
    message = str(err.value)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert "non-finite training loss (loss nan" in message
    assert "at global step 5" in message
    assert f"last good checkpoint is {last} (global step 4)" in message
    assert f"--ckpt_path {last}" in message
    ckpt = load(last)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    # Nothing was applied after step 5's bad loss: the weights are finite.
    assert all(torch.isfinite(p).all() for p in module.parameters())
    load_translator(last)  # still a usable checkpoint


class Snapshot(L.Callback):
    """Weights and Adam state around the update of ``step``."""

    def __init__(self, step):
        self.step, self.before, self.after = step, None, None

    @staticmethod
    def state(trainer, module):
        params = [p.detach().clone() for p in module.parameters()]
        opt = trainer.optimizers[0].state
        moments = [opt[p]["exp_avg"].clone() for p in module.parameters() if p in opt]
        return params, moments

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.before = self.state(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.before is not None and self.after is None:
            self.after = self.state(trainer, module)


def test_nonfinite_loss_skip_leaves_the_update_out(tiny_data, tmp_path):
    module = tiny_module(bad_steps={3, 6}, nonfinite_loss="skip")
    snapshot = Snapshot(3)
    with pytest.warns(UserWarning, match=r"non-finite training loss .* at global step 3.*skipped"):
        trainer = fit(module, tiny_data, tmp_path, max_steps=9, callbacks=[snapshot])
    assert module.skipped_batches == 2
    assert trainer.global_step == 9
    (params_before, moments_before), (params_after, moments_after) = \
        snapshot.before, snapshot.after
    assert len(moments_before) == len(params_before)  # Adam state exists by step 3
    for a, b in zip(params_before + moments_before, params_after + moments_after):
        assert torch.equal(a, b)  # the skipped update changed nothing
    assert all(torch.isfinite(p).all() for p in module.parameters())
    with pytest.raises(ValueError, match="nonfinite_loss='sometimes' is unknown"):
        tiny_module(nonfinite_loss="sometimes")
