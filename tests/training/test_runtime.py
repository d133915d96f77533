"""Process-level CPU settings: the bf16 fallback on CPUs without native bf16."""

from __future__ import annotations

import logging

import pytest

from training import runtime


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_falls_back_to_float32_only_on_cpus_without_bf16(monkeypatch, caplog, fast):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: fast)
    with caplog.at_level(logging.WARNING, logger="training.runtime"):
        got = runtime.resolve_cpu_precision("bf16-mixed", "cpu")
    assert got == ("bf16-mixed" if fast else "32-true")
    assert ("no native bf16" in caplog.text) is (not fast)
    # other precisions and GPU runs are left alone
    assert runtime.resolve_cpu_precision("32-true", "cpu") == "32-true"
    assert runtime.resolve_cpu_precision("16-mixed", "cpu") == "16-mixed"
    assert runtime.resolve_cpu_precision("bf16-mixed", "gpu") == "bf16-mixed"


def test_cpu_has_fast_bf16_reads_torch_cpu_capabilities(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert runtime.cpu_has_fast_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert runtime.cpu_has_fast_bf16() is True
