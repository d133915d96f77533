"""Tests for benchmarks/reference.py and benchmarks/train_benchmark.py (scripts/benchmark_train.py): what makes its comparison fair, and that it runs.

The reference network (``torch.nn.Transformer``) with weights copied from ours
computes the same logits (pre-LN and post-LN, ragged padding); both do the
matrix-multiply work the analytic FLOP formula says
(``torch.utils.flop_counter.FlopCounterMode``); and ``main`` runs end to end
on a tiny model and a slice of Multi30k. No timing is asserted (STYLE.md §9).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode

from model.config import TransformerConfig
from benchmarks.reference import ReferenceTransformer, copy_weights, training_matmul_flops
from model.transformer import Transformer
from training.runtime import cpu_has_fast_bf16

REPO = Path(__file__).resolve().parents[2]
PAD, BOS, EOS = 0, 1, 2
SRC_VALID_LEN = torch.tensor([7, 4, 1])  # B=3 sources of S=7 positions
TGT_VALID_LEN = torch.tensor([3, 6, 1])  # decoder inputs (BOS + target) of T=6 positions

norm_placements = pytest.mark.parametrize("norm_first", [True, False],
                                          ids=["pre_norm", "post_norm"])


bench = importlib.import_module("commands.benchmark_train")


def make_config(norm_first: bool, **overrides) -> TransformerConfig:
    sizes = dict(vocab_size=50, num_hiddens=16, ffn_num_hiddens=32, num_heads=4,
                 num_enc_blks=2, num_dec_blks=2, dropout=0.1, attention_dropout=0.1,
                 activation_dropout=0.1, norm_first=norm_first, max_len=32, pad_id=PAD)
    return TransformerConfig(**{**sizes, **overrides})


def padded(valid_len: torch.Tensor, length: int, first: int | None = None) -> torch.Tensor:
    ids = torch.randint(3, 50, (len(valid_len), length))
    if first is not None:
        ids[:, 0] = first
    ids[torch.arange(length) >= valid_len[:, None]] = PAD
    return ids


def model_pair(norm_first: bool, **overrides):
    ours = Transformer(make_config(norm_first, **overrides))
    ref = ReferenceTransformer(ours.config)
    copy_weights(ours, ref)
    return ours, ref


@norm_placements
def test_reference_computes_our_function(norm_first):
    ours, ref = model_pair(norm_first)
    ours.eval(), ref.eval()
    src, tgt_in = padded(SRC_VALID_LEN, 7), padded(TGT_VALID_LEN, 6, first=BOS)
    with torch.no_grad():
        expected = ours(src, SRC_VALID_LEN, tgt_in)  # (B, T, V)
        actual = ref(src, SRC_VALID_LEN, tgt_in, TGT_VALID_LEN)
        derived = ref(src, SRC_VALID_LEN, tgt_in)  # tgt_valid_len from the pad ids
    valid = torch.arange(6) < TGT_VALID_LEN[:, None]  # logits at padded targets are unused
    assert_close(actual[valid], expected[valid], atol=1e-5, rtol=1e-5)
    assert_close(derived, actual)


@norm_placements
def test_reference_has_our_parameters_and_gradients(norm_first):
    """Same parameter count, and in training mode (dropout 0) the same loss gradient
    of the shared embedding: the backward passes do the same work too."""
    ours, ref = model_pair(norm_first, dropout=0.0, attention_dropout=0.0,
                           activation_dropout=0.0)
    assert ours.num_parameters() == ref.num_parameters()
    src, tgt_in = padded(SRC_VALID_LEN, 7), padded(TGT_VALID_LEN, 6, first=BOS)
    labels = padded(TGT_VALID_LEN, 6)
    for model in (ours, ref):
        logits = model(src, SRC_VALID_LEN, tgt_in)
        F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=PAD).backward()
    assert_close(ref.embedding.weight.grad, ours.src_embedding.weight.grad,
                 atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", ["ours", "reference"])
@norm_placements
def test_flop_formula_matches_flop_counter(which, norm_first):
    ours, ref = model_pair(norm_first)
    model = ours if which == "ours" else ref
    src, tgt_in = padded(SRC_VALID_LEN, 7), padded(TGT_VALID_LEN, 6, first=BOS)
    with FlopCounterMode(display=False) as counter:
        model(src, SRC_VALID_LEN, tgt_in).sum().backward()
    assert counter.get_total_flops() == training_matmul_flops(ours.config, 3, 7, 6)


@pytest.mark.slow
def test_main_runs_end_to_end(tmp_path, multi30k_small):
    cpu = yaml.safe_load((REPO / "configs" / "multi30k_cpu.yaml").read_text())
    tiny = {
        "seed_everything": 1,
        "trainer": {"precision": "bf16-mixed", "gradient_clip_val": 1.0},
        "model": {**cpu["model"], "config": {
            "num_hiddens": 16, "ffn_num_hiddens": 32, "num_heads": 2, "num_enc_blks": 1,
            "num_dec_blks": 1, "max_len": 64, "norm_first": True}},
        "data": {"source": str(multi30k_small), "cache_dir": str(tmp_path / "cache"),
                 "vocab_size": 400, "max_tokens": 256, "max_len": 64, "seed": 1},
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny))
    out = bench.main(["--config", str(config), "--device", "cpu", "--steps", "2",
                      "--warmup", "1", "--repeats", "2", "--json", str(tmp_path / "r.json")])
    assert set(out["rows"]) == {"ours", "reference", "ours, Trainer.fit"}
    # The config's bf16-mixed, as train.py resolves it: float32 where the CPU emulates bf16.
    assert out["precision"] == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert out["parameters"]["ours"] == out["parameters"]["reference"]
    for row in out["rows"].values():
        assert row["tgt_tokens_per_s"] > 0 and row["tokens_per_s"] > row["tgt_tokens_per_s"]
    assert out["rows"]["ours"]["memory_mib"] > 0 and out["rows"]["reference"]["memory_mib"] > 0
    assert set(out["ratios"]) == {"ours / reference", "Trainer.fit / bare step (ours)"}
    assert (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_profile_lists_the_operators_and_writes_a_trace(tmp_path, multi30k_small, capsys):
    """--profile: a table of operators by self time (matrix products among them,
    shares of at most 100%) and a Chrome trace with events."""
    tiny = {"seed_everything": 1, "trainer": {"precision": "32-true"},
            "model": {"config": {"num_hiddens": 16, "ffn_num_hiddens": 32, "num_heads": 2,
                                 "num_enc_blks": 1, "num_dec_blks": 1, "max_len": 64}},
            "data": {"source": str(multi30k_small), "cache_dir": str(tmp_path / "cache"),
                     "vocab_size": 400, "max_tokens": 256, "max_len": 64, "seed": 1}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny))
    trace = tmp_path / "trace.json"
    bench.main(["--config", str(config), "--device", "cpu", "--steps", "2", "--warmup", "1",
                "--repeats", "1", "--no-fit", "--no-memory", "--profile", str(trace)])
    printed = capsys.readouterr().out
    table = printed.split("## Profile of `ours`", 1)[1].splitlines()
    rows = [line.split(" | ") for line in table if line.startswith("| `")]
    assert 5 <= len(rows) <= 25
    assert any(name in printed for name in ("`aten::mm`", "`aten::addmm`", "`aten::bmm`"))
    shares = [float(r[-1].rstrip(" |%")) for r in rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.05
    assert json.loads(trace.read_text())["traceEvents"]
