"""The package layers: model and data at the bottom, inference (no Lightning) above
them, then evaluation, training, benchmarks and commands; no import runs back up. Checked on the source (AST) and by
translating in a process where Lightning cannot be imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: package -> packages of this project it may import
LAYERS = ["model", "data", "inference", "evaluation", "training", "benchmarks", "commands"]
ALLOWED = {"model": {"model"}, "data": {"data"},
           **{package: set(LAYERS[:i + 1]) for i, package in enumerate(LAYERS) if i >= 2}}
#: modules of the lower layers that may import Lightning (the data module and what builds it)
LIGHTNING_ALLOWED = {"data/datamodule.py", "data/prepare.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add(path.parent.name)  # a relative import stays in its package
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_runs_back_up(package):
    for path in sorted((REPO / package).glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ALLOWED:
                assert top in ALLOWED[package], f"{path.relative_to(REPO)} imports {name}"
            if top == "lightning" and package in ("model", "data", "inference", "evaluation"):
                assert str(path.relative_to(REPO)) in LIGHTNING_ALLOWED, \
                    f"{path.relative_to(REPO)} imports Lightning"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _module_level_imports(path: Path) -> set[str]:
    """Project modules ``path`` imports when it is imported (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.parent.name
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_import_cycles():
    """No module imports itself back, through any chain of module-level imports."""
    modules = {_module_name(p): p for package in ALLOWED for p in (REPO / package).glob("*.py")}
    graph = {name: {m for m in _module_level_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, chain: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            assert state.get(other) != 1, " -> ".join(chain + [name, other])
            if other not in state:
                visit(other, chain + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


COMMANDS = sorted(p.stem for p in (REPO / "commands").glob("*.py")
                  if p.stem not in ("__init__", "common", "train"))


def test_help_needs_no_torch():
    """Every command but ``train`` (LightningCLI builds its help from the classes)
    answers ``--help`` without importing torch, Lightning or NumPy; ``--device``
    defaults to ``auto``, resolved after parsing."""
    code = ("import sys, io, contextlib, importlib\n"
            f"for name in {COMMANDS!r}:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try:\n"
            "            importlib.import_module('commands.' + name).run(['--help'])\n"
            "        except SystemExit as e:\n"
            "            assert e.code == 0, (name, e.code)\n"
            "    assert 'usage: ' + name + '.py' in out.getvalue(), (name, out.getvalue())\n"
            "print(sorted(m for m in ('torch', 'lightning', 'numpy') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout
    assert len(COMMANDS) >= 12


@pytest.mark.slow
def test_translating_needs_no_lightning(tmp_path):
    """``from inference import load_translator`` and ``scripts/translate.py`` run in a
    process where importing Lightning fails."""
    from conftest import MULTI30K, tiny_checkpoint

    import torch

    if not MULTI30K.is_dir():
        pytest.skip("Multi30k not found")
    small = tmp_path / "corpus"
    small.mkdir()
    import gzip
    for lang in ("en", "de"):
        with gzip.open(MULTI30K / f"val.{lang}.gz", "rb") as f, \
                gzip.open(small / f"train.{lang}.gz", "wb") as out:
            out.write(f.read())
    torch.save(tiny_checkpoint(small), tmp_path / "tiny.ckpt")
    blocked = ("import sys, runpy; sys.modules['lightning'] = None; "
               "sys.modules['pytorch_lightning'] = None; ")
    api = (blocked + "from inference import load_translator; "
           "from inference.translation import translate_lines; "
           f"t = load_translator({str(tmp_path / 'tiny.ckpt')!r}); "
           "h = translate_lines(t, ['A dog runs.'], t.decoding(beam_size=2), device='cpu'); "
           "assert isinstance(h[0][0].text, str); print('api ok')")
    script = (blocked + f"sys.argv = ['translate.py', '--ckpt', {str(tmp_path / 'tiny.ckpt')!r}, "
              f"'A dog runs.', 'Two men.']; "
              f"runpy.run_path({str(REPO / 'scripts' / 'translate.py')!r}, run_name='__main__')")
    for code, check in ((api, lambda out: "api ok" in out),
                        (script, lambda out: len(out.strip().splitlines()) == 2)):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert check(proc.stdout), proc.stdout


def test_no_module_is_over_600_lines():
    """Modules stay readable: a file per concept, none longer than 600 lines."""
    long = {str(p.relative_to(REPO)): n for package in (*ALLOWED, "scripts")
            for p in (REPO / package).glob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, long


def test_commands_are_entry_points_and_scripts():
    """Every ``[project.scripts]`` entry names a ``run`` of :mod:`commands`, every
    ``scripts/*.py`` is a wrapper of a command module, and no file edits ``sys.path``."""
    import importlib

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    entries = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"nmt-train", "nmt-prepare", "nmt-evaluate", "nmt-translate", "nmt-average",
            "nmt-export-ct2", "nmt-compare"} <= set(entries)
    for target in entries.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    for script in sorted((REPO / "scripts").glob("*.py")):
        assert (REPO / "commands" / script.name).is_file(), script
        assert f"from commands.{script.stem} import run" in script.read_text(), script
    for package in (*ALLOWED, "scripts", "tests"):
        for path in (REPO / package).rglob("*.py"):
            assert "sys.path.insert" not in path.read_text(encoding="utf-8") or \
                path.name == "test_layers.py", path


def test_tests_mirror_the_packages():
    """Each test file sits in ``tests/<package>/``, named after a package of the project."""
    misplaced = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                 if p.parent.name not in LAYERS]
    assert not misplaced, misplaced
    assert {p.parent.name for p in (REPO / "tests").rglob("test_*.py")} == set(LAYERS)
