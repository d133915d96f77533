"""Smoke run of the full recipe's config (``configs/multi30k_tiny.yaml``) on
the 400-pair corpus: train with its callbacks and schedule, average the kept
epoch checkpoints, and choose checkpoint + decoding on val with evaluate.py —
the steps README gives for the recipe, in miniature."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import load_script
from training.averaging import last_checkpoints
from training.module import lr_multiplier

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "multi30k_tiny.yaml"
SIZES = {"num_hiddens": 32, "ffn_num_hiddens": 64, "num_heads": 2,
         "num_enc_blks": 1, "num_dec_blks": 1}


def _fit(tmp: Path, data: Path, trainer: dict, model: dict):
    run_dir = tmp / "run"
    override = {
        "trainer": {"default_root_dir": str(run_dir), "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(run_dir)}},
                    **trainer},
        "model": {"config": SIZES, **model},
        "data": {"source": str(data), "cache_dir": str(tmp / "cache"), "vocab_size": 400,
                 "max_tokens": 1024},
    }
    path = tmp / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    train = load_script("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setattr(sys, "argv", ["train.py"])
        return train.main(["fit", "--config", str(TINY_CONFIG), "--config", str(path)]), run_dir


@pytest.mark.slow
def test_tiny_recipe_trains_averages_and_selects(multi30k_small, tmp_path, monkeypatch):
    # 400 pairs / 1024-token batches: ~12 updates an epoch; 36 updates = 3 epochs,
    # the last 12 of them annealed to zero.
    cli, run_dir = _fit(tmp_path, multi30k_small,
                        {"max_steps": 36, "check_val_every_n_epoch": 1},
                        {"warmup_steps": 8, "cooldown_steps": 12})
    trainer = cli.trainer
    assert trainer.global_step == 36
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.0  # cooldown ended at zero
    epochs = last_checkpoints(run_dir / "checkpoints" / "epochs", 2)
    assert len(list((run_dir / "checkpoints" / "epochs").glob("*.ckpt"))) >= 2
    assert [torch.load(p, weights_only=True, mmap=True)["global_step"] for p in epochs] == \
        sorted(torch.load(p, weights_only=True, mmap=True)["global_step"] for p in epochs)

    average = load_script("average_checkpoints")
    out = average.main(["--run", str(run_dir), "--last", "2"])
    assert Path(out).is_file()

    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    evaluate = load_script("evaluate")
    scores = evaluate.main(["--ckpt", str(run_dir / "checkpoints" / "best.ckpt"), str(out),
                            "--beam", "1", "2", "--select-on", "val", "--data",
                            str(multi30k_small), "--device", "cpu", "--out",
                            str(tmp_path / "eval")])
    assert len(scores["selected_on"]["candidates"]) == 4
    assert scores["split"] == "test_2016_flickr"
    assert {"bleu", "chrf", "bleu_lc_norm_tok"} <= set(scores)


@pytest.mark.slow
@pytest.mark.parametrize("time_budget", [False, True])
def test_max_time_cut_is_reported_and_time_budget_anneals(multi30k_small, tmp_path, time_budget):
    with pytest.warns(UserWarning, match=r"trainer.max_time stopped training in epoch \d+ at "
                                         r"global step \d+ of max_steps=100000") as caught:
        cli, _ = _fit(tmp_path, multi30k_small,
                      {"max_steps": 100000, "max_time": "00:00:00:03",
                       "check_val_every_n_epoch": 50},
                      {"warmup_steps": 2, "cooldown_steps": 50000,
                       "lr_time_budget": time_budget})
    step = cli.trainer.global_step
    assert 0 < step < 100000
    # The epoch it names counts from 1: the cut came after `step` updates of
    # num_training_batches each (a cut at an epoch's last update names that epoch).
    message = next(str(w.message) for w in caught if "max_time stopped" in str(w.message))
    named = int(re.search(r"in epoch (\d+) at global step (\d+)", message).group(1))
    assert named == math.ceil(step / cli.trainer.num_training_batches), message
    assert f"the progress bar's 'Epoch {named - 1}'" in message
    lr, peak = cli.trainer.optimizers[0].param_groups[0]["lr"], cli.model.hparams.lr
    plain = peak * lr_multiplier(step, 2, 50000, 100000)  # after `step` scheduler steps
    if time_budget:  # the schedule ran on the clock: annealed close to 0 by the cut
        assert lr < 0.25 * plain
    else:  # the schedule ran on steps: far from its cooldown
        assert lr == pytest.approx(plain)
