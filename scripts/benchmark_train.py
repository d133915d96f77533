"""Training speed and memory: our Transformer against one built on ``torch.nn.Transformer``.

    python scripts/benchmark_train.py --config configs/multi30k_cpu.yaml --steps 20 --repeats 3
    python scripts/benchmark_train.py --config configs/multi30k_gpu.yaml --compile

What is compared. ``model.config`` of the YAML file gives the sizes and
``data.max_tokens`` the batch budget. Both contestants are a
:class:`training.module.TranslationModule` (so the same label-smoothed loss and
the same AdamW + schedule from ``configure_optimizers``, with the YAML's
hyperparameters); one holds our :class:`model.Transformer`, the other a
:class:`ReferenceTransformer`: ``torch.nn.Transformer`` with the same sizes,
the same tied embedding / output matrix scaled by ``sqrt(D)``, the same
sinusoidal positions, the same dropouts, pre- or post-LN with the same final
LayerNorms, and attention projections without bias. The reference starts from
a copy of our weights (``tests/test_benchmark_train.py`` checks that the two
compute the same function). A training step is forward under autocast (bf16
for ``--precision bf16``), backward, gradient clipping at the YAML's
``trainer.gradient_clip_val``, ``optimizer.step()``, ``scheduler.step()`` and
``zero_grad(set_to_none=True)``: what Lightning does for one batch.

Batches are the first ``--warmup + --steps`` Multi30k training batches of our
``TranslationDataModule`` (token budget ``data.max_tokens``, tokenization
cached under ``data.cache_dir``). Every contestant first trains on the
``--warmup`` batches (with ``--compile``, also once on the timed batches, so
that every shape is compiled before timing); then each of ``--repeats``
rounds runs every contestant over the same ``--steps`` batches, one after
the other, in an order rotated every round (alternating, so a burst of load
from other processes hits all of them alike). Throughput is tokens over the
median round time; the min–max of the rounds shows the noise. On a CPU
shared with other processes, ``--threads 1`` gives much steadier numbers:
a multi-threaded step waits at every parallel region for its slowest
thread, which a busy core delays. Tokens are
real tokens: target = ``tgt_valid_len`` (labels incl. EOS), source =
``src_valid_len``.

The Lightning row runs ``Trainer.fit`` (``TranslationModule`` + our data
module, ``limit_train_batches = warmup + steps``, one epoch, no validation,
checkpointing, logger or progress bar, same precision and clipping) once
per round and times it from the end of the last warm-up batch to the end of
the last batch, so data loading, collation, host-to-device copies and
Lightning's hooks and ``self.log`` are inside the window. Its ratio to our
bare step on the same batches is the overhead of the loop.

Memory ("step memory"): the extra memory a training step needs on top of
the parameters and AdamW state (identical for both models), i.e.
activations saved for backward, gradients and temporaries, at the peak over
one pass of the timed batches, measured in a separate pass after timing.
GPU: ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()``
before the pass. CPU: the same quantity for PyTorch's CPU allocator, from
the allocation and free events that ``torch.profiler`` records with
``profile_memory=True`` (running sum of bytes in time order, maximum over
the pass). Both count tensor bytes only, exactly and reproducibly; the
process's resident set (``ru_maxrss``, ``VmHWM``) also holds glibc's
retained heap and varied by about ±5% between identical passes here, and
``tracemalloc`` does not see PyTorch's allocations.

Model FLOPs: :func:`training_matmul_flops` counts the matrix-multiply FLOPs
of a training step on the padded ``(B, S, T)`` shapes (formula in its
docstring; checked against ``torch.utils.flop_counter.FlopCounterMode`` in
the tests). MFU divides model FLOPs per second by the rate of a large
``torch.matmul`` in the training precision measured on the same device in
the same run (``8192^3`` on GPU, ``2048^3`` on CPU; best of several).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

from model.build import config_from_dict  # noqa: E402
from model.config import TransformerConfig  # noqa: E402
from model.transformer import Transformer  # noqa: E402
from training.benchmarking import synchronize  # noqa: E402
from training.options import require_at_least  # noqa: E402
from training.runtime import resolve_cpu_precision, tune_cpu_allocator  # noqa: E402

__all__ = ["ReferenceTransformer", "copy_weights", "training_matmul_flops", "main"]


# ---------------------------------------------------------------- reference
def sinusoidal_positions(max_len: int, num_hiddens: int) -> torch.Tensor:
    """``P[t, 2i] = sin(t / 10000^(2i/D))``, ``P[t, 2i+1] = cos(...)`` -> ``(max_len, D)``."""
    positions = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    frequencies = 10000 ** (torch.arange(0, num_hiddens, 2, dtype=torch.float32) / num_hiddens)
    angles = positions / frequencies  # (max_len, ceil(D/2))
    P = torch.zeros(max_len, num_hiddens)
    P[:, 0::2] = torch.sin(angles)
    P[:, 1::2] = torch.cos(angles[:, : num_hiddens // 2])
    return P


def _unbiased_attention(c: TransformerConfig) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(c.num_hiddens, c.num_heads, dropout=c.attention_dropout,
                                 bias=False, batch_first=True)


class ReferenceTransformer(nn.Module):
    """The network of :class:`model.Transformer`, built on ``torch.nn.Transformer``.

    Same sizes, one embedding matrix shared by source, target and output
    (``padding_idx`` = ``pad_id``), embeddings scaled by ``sqrt(D)`` plus
    sinusoidal positions then dropout, pre-LN (``norm_first``, with final
    LayerNorms) or post-LN (no final LayerNorm), attention projections without
    bias, FFN with bias and ReLU, dropout ``dropout`` on residual branches,
    ``attention_dropout`` on attention weights and ``activation_dropout``
    inside the FFN. Additive attention is not supported (``nn`` has none).

    Masks (``nn`` convention, True = ignore) are made from the valid lengths:
    ``src_key_padding_mask`` = ``memory_key_padding_mask`` from
    ``src_valid_len``, ``tgt_key_padding_mask`` from ``tgt_valid_len`` (by
    default the count of non-pad ids of ``tgt_in``, which is the same thing
    for batches from ``collate_batch``), and a causal boolean ``tgt_mask``
    with ``tgt_is_causal=True``.

    Shapes:
        ``src`` ``(B, S)``, ``src_valid_len`` ``(B,)``, ``tgt_in`` ``(B, T)``,
        ``tgt_valid_len`` ``(B,)`` -> logits ``(B, T, V)``.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        if c.attention != "dot":
            raise ValueError(f"model config: attention={c.attention!r}; the nn.Transformer "
                             f"reference has dot-product attention only")
        if not c.tie_embeddings:
            raise ValueError("model config: tie_embeddings=false; the reference ties them")
        self.embedding = nn.Embedding(c.vocab_size, c.num_hiddens, padding_idx=c.pad_id)
        self.register_buffer("P", sinusoidal_positions(c.max_len, c.num_hiddens),
                             persistent=False)  # (max_len, D)
        self.dropout = nn.Dropout(c.dropout)
        layer_args = dict(d_model=c.num_hiddens, nhead=c.num_heads,
                          dim_feedforward=c.ffn_num_hiddens, dropout=c.dropout,
                          activation="relu", batch_first=True, norm_first=c.norm_first)
        enc_layer = nn.TransformerEncoderLayer(**layer_args)
        dec_layer = nn.TransformerDecoderLayer(**layer_args)
        enc_layer.self_attn = _unbiased_attention(c)
        dec_layer.self_attn = _unbiased_attention(c)
        dec_layer.multihead_attn = _unbiased_attention(c)
        for layer in (enc_layer, dec_layer):
            layer.dropout.p = c.activation_dropout  # between the FFN's two linear layers
        final_norm = (lambda: nn.LayerNorm(c.num_hiddens)) if c.norm_first else (lambda: None)
        encoder = nn.TransformerEncoder(enc_layer, c.num_enc_blks, norm=final_norm(),
                                        enable_nested_tensor=False)
        decoder = nn.TransformerDecoder(dec_layer, c.num_dec_blks, norm=final_norm())
        self.transformer = nn.Transformer(c.num_hiddens, c.num_heads, custom_encoder=encoder,
                                          custom_decoder=decoder, batch_first=True)
        nn.init.normal_(self.embedding.weight, std=c.num_hiddens ** -0.5)
        with torch.no_grad():
            self.embedding.weight[c.pad_id].zero_()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids -> ``dropout(sqrt(D) E[ids] + P[:L])`` ``(B, L, D)``."""
        X = self.embedding(ids) * self.config.num_hiddens ** 0.5  # (B, L, D)
        return self.dropout(X + self.P[: ids.shape[1]].to(X.dtype))

    def forward(self, src: torch.Tensor, src_valid_len: torch.Tensor, tgt_in: torch.Tensor,
                tgt_valid_len: torch.Tensor | None = None) -> torch.Tensor:
        S, T = src.shape[1], tgt_in.shape[1]
        if tgt_valid_len is None:
            tgt_valid_len = (tgt_in != self.config.pad_id).sum(dim=1)  # (B,)
        src_ignore = torch.arange(S, device=src.device) >= src_valid_len[:, None]  # (B, S)
        tgt_ignore = torch.arange(T, device=src.device) >= tgt_valid_len[:, None]  # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=src.device).triu_(1)  # (T, T)
        Y = self.transformer(self.embed(src), self.embed(tgt_in), tgt_mask=causal,
                             src_key_padding_mask=src_ignore, tgt_key_padding_mask=tgt_ignore,
                             memory_key_padding_mask=src_ignore, tgt_is_causal=True)  # (B, T, D)
        return Y @ self.embedding.weight.T  # (B, T, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@torch.no_grad()
def copy_weights(ours: Transformer, ref: ReferenceTransformer) -> None:
    """Copy every weight of ``ours`` into ``ref`` (then both compute the same function)."""
    def attention(dst: nn.MultiheadAttention, src) -> None:
        dst.in_proj_weight.copy_(torch.cat([src.W_q.weight, src.W_k.weight, src.W_v.weight]))
        dst.out_proj.weight.copy_(src.W_o.weight)

    def linear_or_norm(dst: nn.Module, src: nn.Module) -> None:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)

    ref.embedding.weight.copy_(ours.src_embedding.weight)
    for blk, layer in zip(ours.encoder.blks, ref.transformer.encoder.layers, strict=True):
        attention(layer.self_attn, blk.attention)
        for dst, src in ((layer.norm1, blk.addnorm1.ln), (layer.norm2, blk.addnorm2.ln),
                         (layer.linear1, blk.ffn.dense1), (layer.linear2, blk.ffn.dense2)):
            linear_or_norm(dst, src)
    for blk, layer in zip(ours.decoder.blks, ref.transformer.decoder.layers, strict=True):
        attention(layer.self_attn, blk.attention1)
        attention(layer.multihead_attn, blk.attention2)
        for dst, src in ((layer.norm1, blk.addnorm1.ln), (layer.norm2, blk.addnorm2.ln),
                         (layer.norm3, blk.addnorm3.ln), (layer.linear1, blk.ffn.dense1),
                         (layer.linear2, blk.ffn.dense2)):
            linear_or_norm(dst, src)
    if ours.config.norm_first:
        linear_or_norm(ref.transformer.encoder.norm, ours.encoder.final_ln)
        linear_or_norm(ref.transformer.decoder.norm, ours.decoder.final_ln)


# -------------------------------------------------------------------- FLOPs
def training_matmul_flops(c: TransformerConfig, batch_size: int, src_len: int,
                          tgt_len: int) -> int:
    """Matrix-multiply FLOPs of one training step on a padded ``(B, S, T)`` batch.

    A multiply-add is 2 FLOPs. Forward, with D = ``num_hiddens``, F =
    ``ffn_num_hiddens``, V = vocabulary:

    * encoder block: ``8 B S D^2`` (Q, K, V, O projections) + ``4 B S^2 D``
      (scores ``Q K^T`` and ``weights @ V``) + ``4 B S D F`` (FFN);
    * decoder block: ``8 B T D^2 + 4 B T^2 D`` (self-attention) +
      ``4 B T D^2 + 4 B S D^2 + 4 B T S D`` (cross-attention: Q and O on the
      target, K and V on the encoder output, scores and weighted sum) +
      ``4 B T D F`` (FFN);
    * output layer: ``2 B T D V``.

    Backward costs twice the forward (a gradient for each of the two inputs
    of every product), so a step is ``3 x`` forward. Counted on the padded
    shapes the kernels process, with no discount for the causal mask;
    embeddings lookups, softmax, LayerNorm and the optimizer are not
    matmuls and are not counted.
    """
    B, S, T = batch_size, src_len, tgt_len
    D, F, V = c.num_hiddens, c.ffn_num_hiddens, c.vocab_size
    encoder = 8 * B * S * D * D + 4 * B * S * S * D + 4 * B * S * D * F
    decoder = (8 * B * T * D * D + 4 * B * T * T * D
               + 4 * B * T * D * D + 4 * B * S * D * D + 4 * B * T * S * D
               + 4 * B * T * D * F)
    forward = c.num_enc_blks * encoder + c.num_dec_blks * decoder + 2 * B * T * D * V
    return 3 * forward


def measure_matmul_rate(device: torch.device, dtype: torch.dtype, tries: int = 5) -> float:
    """FLOP/s of a large square ``torch.matmul`` (best of ``tries`` timed runs)."""
    n, iters = (8192, 20) if device.type == "cuda" else (2048, 3)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = math.inf
    for attempt in range(tries + 1):  # the first one warms up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        synchronize(device)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 * iters / best


# ------------------------------------------------------------------ helpers

def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_run_config(path: str) -> dict:
    """The ``model``, ``data`` and ``trainer`` sections of a training YAML file."""
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if "config" not in raw.get("model", {}):
        raise ValueError(f"{path}: no model.config block; pass a training config such as "
                         f"configs/multi30k_cpu.yaml")
    return {"model": raw["model"], "data": raw.get("data", {}),
            "trainer": raw.get("trainer", {}), "seed": raw.get("seed_everything", 1)}


def make_datamodule(run: dict):
    from data.datamodule import TranslationDataModule
    return TranslationDataModule(**run["data"])


def make_module(run: dict, reference: bool = False, copy_from=None, attention: str | None = None):
    """A ``TranslationModule`` from the YAML's ``model`` block; with ``reference``,
    its network replaced by a :class:`ReferenceTransformer` (weights copied from
    ``copy_from`` when given); ``attention`` overrides ``model.config.attention``."""
    from training.module import TranslationModule
    kwargs = {k: v for k, v in run["model"].items() if k != "config"}
    config = dict(run["model"]["config"])
    if attention is not None:
        config["attention"] = attention
    if config.get("arch", "transformer") != "transformer":
        raise ValueError(f"model.config.arch={config['arch']!r}: this benchmark compares "
                         f"Transformers; use a Transformer config")
    kwargs.setdefault("vocab_size", run["data"].get("vocab_size"))
    # A few timed steps, not the recipe's run: no cooldown (it needs the run length).
    kwargs.update(cooldown_steps=0, lr_time_budget=False)
    module = TranslationModule(config=config_from_dict(config), **kwargs)
    if reference:
        ref = ReferenceTransformer(module.config)
        if copy_from is not None:
            copy_weights(copy_from, ref)
        module.model = ref
    return module


def batch_tokens(batch: dict) -> tuple[int, int]:
    """(target tokens, source + target tokens) of a batch, padding excluded."""
    tgt = int(batch["tgt_valid_len"].sum())
    return tgt, tgt + int(batch["src_valid_len"].sum())


# --------------------------------------------------------------- contestants
@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)
    memory: float | None = None  # bytes


class BareStep:
    """A ``TranslationModule`` trained by a plain loop: one ``run`` = one pass over batches."""

    def __init__(self, name: str, module, device: torch.device, precision: str,
                 clip: float | None, compiled: bool):
        self.name, self.device, self.precision, self.clip = name, device, precision, clip
        self.module = module.to(device).train()
        if compiled:
            self.module.model = torch.compile(self.module.model)
        optim = self.module.configure_optimizers()
        self.optimizer = optim["optimizer"]
        self.scheduler = optim["lr_scheduler"]["scheduler"]
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]

    def step(self, batch: dict) -> None:
        with _autocast(self.device, self.precision):
            loss, _ = self.module.loss(batch)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, batches: list[dict]) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for batch in batches:
            self.step(batch)
        synchronize(self.device)
        return time.perf_counter() - start


def _fit_timer(warmup: int, last: int, device: torch.device):
    import lightning as L

    class StepTimer(L.Callback):
        """Times Trainer.fit from the end of batch ``warmup - 1`` to the end of batch
        ``last``; keeps each batch's ``index`` (compared after fit, so no device sync)."""

        def __init__(self):
            self.start = self.stop = None
            self.indices: list[torch.Tensor] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.indices.append(batch["index"])
            if batch_idx == warmup - 1:
                synchronize(device)
                self.start = time.perf_counter()
            elif batch_idx == last:
                synchronize(device)
                self.stop = time.perf_counter()

    return StepTimer()


class FitLoop:
    """``Trainer.fit`` on a fresh ``TranslationModule``; ``run`` returns the timed window."""

    def __init__(self, name: str, run_config: dict, datamodule, device: torch.device,
                 precision: str, clip: float | None, warmup: int, batches: list[dict]):
        self.name, self.run_config, self.datamodule = name, run_config, datamodule
        self.device, self.precision, self.clip, self.warmup = device, precision, clip, warmup
        self.total = len(batches)
        self.expected = [b["index"].cpu() for b in batches]
        self.mismatches = 0

    def run(self, batches: list[dict]) -> float:
        import lightning as L
        module = make_module(self.run_config)
        timer = _fit_timer(self.warmup, self.total - 1, self.device)
        with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = L.Trainer(
                accelerator="gpu" if self.device.type == "cuda" else "cpu", devices=1,
                precision="bf16-mixed" if self.precision == "bf16" else "32-true",
                max_epochs=1, limit_train_batches=self.total, limit_val_batches=0,
                num_sanity_val_steps=0, gradient_clip_val=self.clip, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, use_distributed_sampler=False,
                default_root_dir=root, callbacks=[timer])
            trainer.fit(module, datamodule=self.datamodule)
        self.mismatches += sum(not torch.equal(seen.cpu(), expected)
                               for seen, expected in zip(timer.indices, self.expected))
        if timer.start is None or timer.stop is None:
            raise RuntimeError(f"Trainer.fit ran fewer than {self.total} batches; the training "
                               f"split has too few batches for --warmup + --steps")
        return timer.stop - timer.start


# ------------------------------------------------------------------- memory
def measure_step_memory(contestant: BareStep, batches: list[dict]) -> float:
    """Peak extra memory (bytes) of training on ``batches`` (see the module docstring)."""
    device = contestant.device
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        contestant.run(batches)
        return float(torch.cuda.max_memory_allocated(device) - base)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        contestant.run(batches)
    # Every allocation (+bytes) and free (-bytes) of PyTorch's CPU allocator, in time order.
    changes = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return float(peak)


# --------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True,
                   help="training YAML (model.config, model hyperparameters, data, trainer)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (>= 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported")
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                   help="bf16 autocast or float32 (default: the config's trainer.precision)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch.set_num_threads; default: torch's choice)")
    p.add_argument("--compile", action="store_true",
                   help="also measure torch.compile of both networks")
    p.add_argument("--additive", action="store_true",
                   help="also measure our Transformer with attention: additive (same config "
                        "otherwise; fused additive kernel where it compiles)")
    p.add_argument("--no-fit", action="store_true", help="skip the Trainer.fit row")
    p.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    require_at_least(p, args, warmup=1, steps=1, repeats=1, threads=1)
    return args


def _quiet_libraries() -> None:
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        import datasets
        datasets.disable_progress_bars()


def main(argv=None) -> dict:
    args = parse_args(argv)
    tune_cpu_allocator()
    _quiet_libraries()
    run = load_run_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # The config's precision as train.py would use it (bf16 -> fp32 on a CPU that emulates bf16);
    # an explicit --precision is measured as asked.
    configured = resolve_cpu_precision(run["trainer"].get("precision", "32"),
                                       "cpu" if device.type == "cpu" else "gpu")
    precision = args.precision or ("bf16" if str(configured).startswith("bf16") else "fp32")
    clip = run["trainer"].get("gradient_clip_val")
    torch.manual_seed(run["seed"])
    load_before = os.getloadavg()

    datamodule = make_datamodule(run)
    datamodule.setup("fit")
    batches, loader = [], iter(datamodule.train_dataloader())
    for _ in range(args.warmup + args.steps):
        try:
            batches.append(next(loader))
        except StopIteration:
            raise SystemExit(f"the training split has only {len(batches)} batches of "
                             f"{run['data'].get('max_tokens')} tokens; lower --warmup/--steps"
                             ) from None
    on_device = [{k: v.to(device) for k, v in b.items()} for b in batches]
    warmup_batches, timed = on_device[: args.warmup], on_device[args.warmup:]
    tgt_tokens = sum(batch_tokens(b)[0] for b in batches[args.warmup:])
    all_tokens = sum(batch_tokens(b)[1] for b in batches[args.warmup:])

    ours_module = make_module(run)
    config = ours_module.config
    flops = sum(training_matmul_flops(config, b["src"].shape[0], b["src"].shape[1],
                                      b["tgt_in"].shape[1]) for b in batches[args.warmup:])
    ref_module = make_module(run, reference=True, copy_from=ours_module.model)
    num_params = {"ours": ours_module.model.num_parameters(),
                  "reference": ref_module.model.num_parameters()}
    contestants: list = [BareStep("ours", ours_module, device, precision, clip, False),
                         BareStep("reference", ref_module, device, precision, clip, False)]
    if args.compile:
        ours_c = make_module(run)
        ref_c = make_module(run, reference=True, copy_from=ours_c.model)
        contestants += [BareStep("ours compiled", ours_c, device, precision, clip, True),
                        BareStep("reference compiled", ref_c, device, precision, clip, True)]
    if args.additive:
        contestants.append(BareStep("ours, additive", make_module(run, attention="additive"),
                                    device, precision, clip, False))
    for c in contestants:  # warm-up (and compilation; the fused additive kernel compiles too)
        c.run(warmup_batches + (timed if "compiled" in c.name or "additive" in c.name else []))
    if not args.no_fit:
        contestants.append(FitLoop("ours, Trainer.fit", run, datamodule, device, precision,
                                   clip, args.warmup, batches))

    results = {c.name: Result(c.name) for c in contestants}
    for r in range(args.repeats):
        order = contestants[r % len(contestants):] + contestants[: r % len(contestants)]
        for c in order:
            results[c.name].seconds.append(c.run(timed))
    if not args.no_memory:
        for c in contestants:
            if isinstance(c, BareStep):
                results[c.name].memory = measure_step_memory(c, timed)
    matmul_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    matmul_rate = measure_matmul_rate(device, matmul_dtype)
    load_after = os.getloadavg()

    rows = {}
    for name, res in results.items():
        seconds = statistics.median(res.seconds)
        rows[name] = {
            "seconds": seconds, "seconds_min": min(res.seconds), "seconds_max": max(res.seconds),
            "ms_per_step": 1000 * seconds / args.steps,
            "tgt_tokens_per_s": tgt_tokens / seconds, "tokens_per_s": all_tokens / seconds,
            "model_tflops_per_s": flops / seconds / 1e12,
            "mfu": flops / seconds / matmul_rate, "memory_mib": (
                res.memory / 2 ** 20 if res.memory is not None else None)}

    def ratio(a: str, b: str, key: str):
        if a not in rows or b not in rows or rows[a][key] is None or not rows[b][key]:
            return None
        return rows[a][key] / rows[b][key]

    ratios = {
        "ours / reference": (ratio("ours", "reference", "tokens_per_s"),
                             ratio("ours", "reference", "memory_mib")),
        "ours / reference, compiled": (ratio("ours compiled", "reference compiled",
                                             "tokens_per_s"),
                                       ratio("ours compiled", "reference compiled",
                                             "memory_mib")),
        "ours compiled / ours": (ratio("ours compiled", "ours", "tokens_per_s"),
                                 ratio("ours compiled", "ours", "memory_mib")),
        "reference compiled / reference": (ratio("reference compiled", "reference",
                                                 "tokens_per_s"),
                                           ratio("reference compiled", "reference",
                                                 "memory_mib")),
        "ours, additive / ours": (ratio("ours, additive", "ours", "tokens_per_s"),
                                  ratio("ours, additive", "ours", "memory_mib")),
        "Trainer.fit / bare step (ours)": (ratio("ours, Trainer.fit", "ours", "tokens_per_s"),
                                           None),
    }
    ratios = {k: v for k, v in ratios.items() if v[0] is not None}

    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"{platform.processor() or platform.machine()} CPU, "
                        f"{torch.get_num_threads()} threads")
    c = config
    lines = [
        f"# training step, {args.config}: D={c.num_hiddens} FFN={c.ffn_num_hiddens} "
        f"H={c.num_heads} blocks={c.num_enc_blks}+{c.num_dec_blks} V={c.vocab_size} "
        f"norm_first={c.norm_first}, {num_params['ours']:,} parameters "
        f"(reference {num_params['reference']:,})",
        f"# {device_name}, torch {torch.__version__}, {precision}, max_tokens="
        f"{run['data'].get('max_tokens')}, {args.steps} steps x {args.repeats} rounds after "
        f"{args.warmup} warm-up; {tgt_tokens} target / {all_tokens} source+target tokens "
        f"per round; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"# {precision} matmul rate measured here: {matmul_rate / 1e12:.2f} TFLOP/s; model "
        f"FLOPs per round {flops / 1e12:.3f} TFLOP",
        "",
        "| model | target tok/s | src+tgt tok/s | ms/step (median, min–max) | model TFLOP/s "
        "| MFU | step memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        memory = f"{row['memory_mib']:.0f}" if row["memory_mib"] is not None else "n/a"
        if name.endswith("Trainer.fit"):
            memory = "—"
        lo, hi = (1000 * row[k] / args.steps for k in ("seconds_min", "seconds_max"))
        lines.append(f"| {name} | {row['tgt_tokens_per_s']:,.0f} | {row['tokens_per_s']:,.0f} "
                     f"| {row['ms_per_step']:.1f} ({lo:.1f}–{hi:.1f}) "
                     f"| {row['model_tflops_per_s']:.3g} | {100 * row['mfu']:.1f}% | {memory} |")
    lines += ["", "| ratio | throughput (>1: first is faster) "
              "| step memory (<1: first uses less) |", "|---|---|---|"]
    for name, (speed, memory) in ratios.items():
        lines.append(f"| {name} | {speed:.3f} | "
                     f"{f'{memory:.3f}' if memory is not None else '—'} |")
    for c_ in contestants:
        if isinstance(c_, FitLoop) and c_.mismatches:
            lines.append(f"\nwarning: Trainer.fit saw {c_.mismatches} batches that differ from "
                         f"the bare step's; the data module's batch order is not reproducible")
    print("\n".join(lines))
    out = {"rows": rows, "ratios": {k: {"throughput": v[0], "memory": v[1]}
                                    for k, v in ratios.items()},
           "parameters": num_params, "matmul_flops_per_s": matmul_rate,
           "flops_per_round": flops, "tokens_per_round": {"target": tgt_tokens,
                                                          "source_target": all_tokens},
           "load_average": {"before": load_before, "after": load_after},
           "device": device_name, "precision": precision}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
