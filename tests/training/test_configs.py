"""The shipped configs: a base file and small recipes that resolve to what the
recipes were before they were split (``tests/training/golden/``: their
``--print_config`` outputs, committed before the change).

Allowed differences, each asked for by an issue: the ``ModelCheckpoint``
callbacks a recipe tunes key by key moved from ``trainer.callbacks`` to the
``checkpoint_interval`` and ``averaging_checkpoints`` sections (#33; compared
as one set of callbacks here), every recipe logs ``SpeedMonitor``'s tokens/s
(#33, one base for all), and ``CHANGED`` lists single values an issue changed.
Where an issue replaced a recipe (#34: the comparison at the main job's recipe,
the GPU recipe as Transformer-tiny), its golden file was printed again from the
new recipe in the same commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from training.cli import CHECKPOINT_SECTIONS, resolve_config
from training.run_dir import derive_run_paths

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
RECIPES = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("base"))
MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
SPEED_MONITOR = "training.callbacks.SpeedMonitor"
#: recipe -> {dotted key: new value} changed on purpose since the golden file.
CHANGED: dict[str, dict[str, object]] = {}


def _plain(value):
    """Drop None values (a dump leaves them out where print_config writes them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _callbacks(config: dict) -> list[str]:
    """Every callback the trainer gets, as sorted JSON: ``trainer.callbacks`` and the
    checkpoint sections, without sections that keep nothing (``save_top_k: 0``)."""
    entries = list(config["trainer"].get("callbacks") or [])
    for name in CHECKPOINT_SECTIONS:
        section = config.pop(name, None)
        if section is not None and section.get("save_top_k") != 0:
            entries.append({"class_path": MODEL_CHECKPOINT, "init_args": section})
    config["trainer"].pop("callbacks", None)
    return sorted(json.dumps(_plain(entry), sort_keys=True) for entry in entries)


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        config = config[key]
    config[last] = value


def test_every_recipe_has_a_golden_file_and_a_base():
    assert (REPO / "configs" / "base.yaml").is_file()
    assert {p.stem for p in RECIPES} == {p.stem for p in GOLDEN.glob("*.yaml")}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_is_small_and_says_no_result(recipe):
    """At most 40 key lines; comments say what a key means, never a result."""
    lines = recipe.read_text(encoding="utf-8").splitlines()
    keys = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert len(keys) <= 40, (recipe.name, len(keys))
    for line in lines:
        comment = line.split("#", 1)[1] if "#" in line else ""
        assert "val 3" not in comment and "test 3" not in comment and "BLEU 3" not in comment, line


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_resolves_to_its_golden_config(recipe, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs' relative paths, as a user runs them
    new = resolve_config("--config", f"configs/{recipe.name}")
    old = yaml.safe_load((GOLDEN / recipe.name).read_text())
    # goldens printed after the split give paths relative to the run directory
    derive_run_paths(old["trainer"], [old[name] for name in CHECKPOINT_SECTIONS if name in old])
    for config in (new, old):
        config.pop("config", None)
        config.pop("ckpt_path", None)
    old_callbacks, new_callbacks = _callbacks(old), _callbacks(new)
    speed = json.dumps(_plain({"class_path": SPEED_MONITOR,
                               "init_args": {"token_key": "tgt_valid_len"}}), sort_keys=True)
    if speed not in old_callbacks:
        old_callbacks = sorted(old_callbacks + [speed])
    assert new_callbacks == old_callbacks
    for dotted, value in CHANGED.get(recipe.stem, {}).items():
        _set(old, dotted, value)
    assert _plain(new) == _plain(old)


def test_run_directory_is_one_setting(tmp_path, monkeypatch):
    """``--trainer.default_root_dir`` alone moves every checkpoint and log path."""
    monkeypatch.chdir(REPO)
    config = resolve_config("--config", "configs/multi30k_tiny.yaml",
                            "--trainer.default_root_dir", str(tmp_path / "exp"))
    paths = [c["init_args"]["dirpath"] for c in config["trainer"]["callbacks"]
             if "dirpath" in c.get("init_args", {})]
    paths += [config[name]["dirpath"] for name in CHECKPOINT_SECTIONS]
    paths += [logger["init_args"]["save_dir"] for logger in config["trainer"]["logger"]]
    assert sorted(paths) == sorted([str(tmp_path / "exp" / "checkpoints")] * 3 + [
        str(tmp_path / "exp" / "checkpoints" / "epochs"), str(tmp_path / "exp"),
        str(tmp_path / "exp")])


#: What a 400-pair corpus and a CPU cannot take from a recipe, and nothing else.
SMOKE = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "2",
         "--trainer.max_epochs", "-1", "--trainer.val_check_interval", "2",
         "--trainer.check_val_every_n_epoch", "null", "--trainer.limit_val_batches", "1",
         "--trainer.enable_progress_bar", "false", "--data.vocab_size", "400",
         "--data.num_workers", "0", "--data.src_lang", "en", "--data.tgt_lang", "de",
         "--data.train_split", "train", "--data.valid_split", "val",
         "--data.test_split", "test_2016_flickr", "--data.hub_config", "null",
         "--model.warmup_steps", "1", "--model.cooldown_steps", "0",
         "--data.max_tokens", "1024", "--data.eval_max_tokens", "512",
         "--trainer.accumulate_grad_batches", "1"]


#: configs/wmt14_en_de.yaml trains two updates in
#: tests/data/test_data_scale.py::test_wmt14_config_data_path_and_two_updates (hub-shaped data).
SMOKED = [p for p in RECIPES if p.stem != "wmt14_en_de"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", SMOKED, ids=[p.stem for p in SMOKED])
def test_recipe_trains_two_updates_on_a_tiny_corpus(recipe, multi30k_small, tmp_path,
                                                    monkeypatch):
    """Every shipped recipe, as written (network, optimizer, checkpoints, loggers),
    trains two updates and validates once on the CPU."""
    import commands.train as train

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train.main(["fit", "--config", str(recipe), *SMOKE, "--data.source", str(multi30k_small),
                "--data.cache_dir", str(tmp_path / "cache"), "--trainer.default_root_dir",
                str(run)])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert list(run.glob("lightning_logs/version_0/metrics.csv"))
