"""One run directory (``training/run_dir.py``): every checkpoint folder and log
of a shipped recipe derives from ``trainer.default_root_dir``, configs that
spell their paths out (saved ones, older versions) move with it, and a new run
refuses a folder that holds another run's checkpoints.

Reference: the recipes resolved without and with ``--trainer.default_root_dir``
(every path at the same place relative to the run directory), the golden
configs of ``tests/training/golden/`` (paths spelled out), and the trainer that
``LightningCLI`` builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from model.config import ConfigError
from conftest import RECIPES
from training.cli import CHECKPOINT_SECTIONS, resolve_config
from training.run_dir import check_run_dir_free, config_file_roots, move_run_paths

REPO = Path(__file__).resolve().parents[2]



def spelled_paths(trainer: dict) -> list[str]:
    loggers = trainer.get("logger") or []
    loggers = loggers if isinstance(loggers, list) else [loggers]
    return ([c["init_args"]["dirpath"] for c in trainer.get("callbacks", [])
             if "dirpath" in c.get("init_args", {})]
            + [g["init_args"]["save_dir"] for g in loggers if "save_dir" in g.get("init_args", {})])


def _spells_out_paths(golden: Path) -> bool:
    trainer = yaml.safe_load(golden.read_text())["trainer"]
    root = trainer["default_root_dir"]
    return all(Path(p).is_relative_to(root) for p in spelled_paths(trainer))


#: Golden configs printed before the split (#33): every path spelled out under the root.
GOLDEN = [g for g in sorted((Path(__file__).resolve().parent / "golden").glob("*.yaml"))
          if _spells_out_paths(g)]


@pytest.mark.parametrize("config", RECIPES, ids=[c.stem for c in RECIPES])
def test_every_recipe_path_derives_from_the_run_directory(config, tmp_path):
    def paths(resolved: dict) -> list[str]:
        return spelled_paths(resolved["trainer"]) + [resolved[name]["dirpath"]
                                                      for name in CHECKPOINT_SECTIONS]

    shipped = resolve_config("--config", str(config))
    root = shipped["trainer"]["default_root_dir"]
    assert root == f"runs/{config.stem}"
    before = paths(shipped)
    assert all(Path(p).is_relative_to(root) for p in before)
    moved = paths(resolve_config("--config", str(config), "--trainer.default_root_dir",
                                 str(tmp_path / "exp2")))
    assert moved == [str(tmp_path / "exp2" / Path(p).relative_to(root)) for p in before]


@pytest.mark.parametrize("config", GOLDEN, ids=[c.stem for c in GOLDEN])
def test_every_spelled_out_path_moves(config, tmp_path):
    trainer = yaml.safe_load(config.read_text())["trainer"]
    root = trainer["default_root_dir"]
    before = spelled_paths(trainer)
    assert before and all(Path(p).is_relative_to(root) for p in before)  # the configs' promise
    trainer["default_root_dir"] = str(tmp_path / "exp2")
    moved = move_run_paths(trainer, config_file_roots([config]))
    after = spelled_paths(trainer)
    assert len(moved) == len(before)
    assert after == [str(tmp_path / "exp2" / Path(p).relative_to(root)) for p in before]
    assert move_run_paths(trainer, config_file_roots([config])) == []  # already there


def test_refuses_another_runs_checkpoints_unless_resumed(tmp_path):
    trainer = {"default_root_dir": str(tmp_path), "callbacks": [
        {"class_path": "ModelCheckpoint", "init_args": {"dirpath": str(tmp_path / "checkpoints")}}]}
    check_run_dir_free(trainer, None)  # empty: fine
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "notes.txt").write_text("not a checkpoint")
    check_run_dir_free(trainer, None)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"already holds another run's checkpoints \(last.ckpt"):
        check_run_dir_free(trainer, None)
    check_run_dir_free(trainer, str(tmp_path / "checkpoints" / "last.ckpt"))  # resuming it
    check_run_dir_free(trainer, "last")


def test_cli_builds_the_trainer_in_the_new_directory(tmp_path, monkeypatch):
    """``train.py fit --config configs/multi30k_cpu.yaml --trainer.default_root_dir
    DIR``: the trainer LightningCLI builds writes checkpoints, epoch
    checkpoints, CSV and TensorBoard logs under DIR and nowhere else."""
    import commands.train as train

    monkeypatch.chdir(REPO)  # the config's relative paths, as a user runs it
    exp = tmp_path / "exp2"
    cli = train.TranslationCLI(
        train.TranslationModule, train.TranslationDataModule, run=False,
        args=["--config", "configs/multi30k_cpu.yaml", "--trainer.default_root_dir", str(exp),
              "--trainer.accelerator", "cpu", "--data.source", str(tmp_path / "unused")])
    dirpaths = [c.dirpath for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert dirpaths and all(Path(d).is_relative_to(exp) for d in dirpaths)
    assert {Path(d).relative_to(exp).as_posix() for d in dirpaths} == {"checkpoints",
                                                                       "checkpoints/updates"}
    kinds = {type(logger).__name__: Path(logger.save_dir) for logger in cli.trainer.loggers}
    assert kinds == {"CSVLogger": exp, "TensorBoardLogger": exp}
    assert not (REPO / "runs" / "exp2").exists()


def test_run_paths_move_once_into_a_run_directory_inside_the_recipes(tmp_path):
    """``--trainer.default_root_dir runs/multi30k_cpu/seed2`` (inside the recipe's own
    run directory): moving and deriving twice (the CLI checks --ckpt_path first) put
    every path under it once."""
    from training.run_dir import derive_run_paths

    trainer = {"default_root_dir": "runs/multi30k_cpu/seed2",
               "callbacks": [{"init_args": {"dirpath": "checkpoints"}},
                             {"init_args": {"dirpath": "runs/multi30k_cpu/checkpoints"}}],
               "logger": [{"init_args": {"save_dir": "."}}]}
    sections = [{"dirpath": "checkpoints/updates"}]
    for _ in range(2):
        move_run_paths(trainer, ["runs/multi30k_cpu"], sections)
        derive_run_paths(trainer, sections)
    assert spelled_paths(trainer) == ["runs/multi30k_cpu/seed2/checkpoints"] * 2 + [
        "runs/multi30k_cpu/seed2"]
    assert sections[0]["dirpath"] == "runs/multi30k_cpu/seed2/checkpoints/updates"


@pytest.mark.slow
def test_a_config_saved_before_the_split_builds_its_trainer(tmp_path, monkeypatch):
    """A full config that lists its checkpoints under trainer.callbacks (a saved
    config.yaml, a config of an older version) builds one callback per checkpoint:
    the base's sections that duplicate them (same state_key) or keep nothing stay out."""
    import commands.train as train

    monkeypatch.chdir(REPO)
    old = yaml.safe_load((Path(__file__).resolve().parent / "golden" / "multi30k_tiny.yaml")
                         .read_text())
    for key in ("ckpt_path", "weights_only"):  # fit-level keys; this parser has no subcommands
        old.pop(key)
    (tmp_path / "saved.yaml").write_text(yaml.safe_dump(old))
    old = tmp_path / "saved.yaml"
    cli = train.TranslationCLI(
        train.TranslationModule, train.TranslationDataModule, run=False,
        args=["--config", str(old), "--trainer.default_root_dir", str(tmp_path / "run"),
              "--trainer.accelerator", "cpu", "--data.source", str(tmp_path / "unused")])
    checkpoints = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert len({c.state_key for c in checkpoints}) == len(checkpoints)
    # its own four (best, last, last every 200 updates, epochs) and the base's last.ckpt
    # every 100 updates; the base's empty averaging section stays out
    assert sorted((Path(c.dirpath).relative_to(tmp_path / "run").as_posix(), c.filename,
                   c._every_n_train_steps) for c in checkpoints) == [
        ("checkpoints", "best", 0), ("checkpoints", "last", 0), ("checkpoints", "last", 100),
        ("checkpoints", "last", 200), ("checkpoints/epochs", "epoch={epoch:03d}", 0)]
