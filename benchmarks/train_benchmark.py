"""The training-speed benchmark: our Transformer against
:class:`benchmarks.reference.ReferenceTransformer`
(``torch.nn.Transformer``), bare training steps and ``Trainer.fit``, tokens/s,
model FLOPs, MFU and step memory. ``scripts/benchmark_train.py`` is its
command line; its docstring describes the method.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import torch

from data.files import yaml_damage
from model.build import config_from_dict
from training.runtime import resolve_cpu_precision

from .reference import ReferenceTransformer, copy_weights, training_matmul_flops
from .timing import synchronize

__all__ = ["run_benchmark", "load_run_config", "make_module", "measure_step_memory",
           "profile_steps"]


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
    """The ``model``, ``data`` and ``trainer`` sections of a training config, as
    ``scripts/train.py`` reads it (:func:`training.cli.resolve_config`: the base
    config under it, every default filled in).

    Raises:
        ValueError: if the file is missing, damaged (:func:`data.files.yaml_damage`)
            or describes no Transformer (``model.config``).
    """
    if not os.path.isfile(path):
        raise ValueError(f"--config {path}: no such file; pass a training config such as "
                         f"configs/multi30k_cpu.yaml")
    damage = yaml_damage(path)
    if damage is not None:
        raise ValueError(f"--config {path} is damaged: {damage}; restore it or fix it")
    from training.cli import resolve_config

    resolved = resolve_config("--config", path)
    if not resolved.get("model", {}).get("config"):
        raise ValueError(f"{path}: no model.config block; pass a training config such as "
                         f"configs/multi30k_cpu.yaml")
    return {"model": resolved["model"], "data": resolved.get("data", {}),
            "trainer": resolved.get("trainer", {}), "seed": resolved.get("seed_everything", 1)}


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


def profile_steps(contestant: BareStep, batches: list[dict], trace: str | None = None,
                  row_limit: int = 25) -> list[str]:
    """Where a training step's time goes: ``torch.profiler`` over one pass of
    ``contestant`` on ``batches`` (CPU, and CUDA kernels on a GPU).

    Args:
        contestant: the step to profile (warmed up already).
        batches: its batches, on its device.
        trace: path of a Chrome trace (``chrome://tracing``, Perfetto) to
            write, or None.
        row_limit: operators listed.

    Returns:
        Markdown lines: the operators with the most self time (their own,
        callees excluded), with calls, self time in ms per step and share of
        the profiled time; forward and backward operators are listed apart
        (autograd's ``...Backward`` nodes).

    Source: ``torch.profiler`` (PyTorch docs, "Profiling your PyTorch Module").
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = contestant.device.type == "cuda"
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        contestant.run(batches)
    if trace:
        prof.export_chrome_trace(trace)
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(events, key=lambda e: getattr(e, attr, 0.0), reverse=True)
    total = sum(getattr(e, attr, 0.0) for e in events) or 1.0
    steps = max(1, len(batches))
    lines = [f"| operator ({'CUDA' if cuda else 'CPU'} self time) | calls per step "
             f"| ms per step | share |", "|---|---|---|---|"]
    for e in rows[:row_limit]:
        value = getattr(e, attr, 0.0)
        lines.append(f"| `{e.key}` | {e.count / steps:.0f} | {value / 1000 / steps:.2f} "
                     f"| {100 * value / total:.1f}% |")
    lines.append(f"| all operators | | {total / 1000 / steps:.2f} | 100% |")
    return lines


def _quiet_libraries() -> None:
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        import datasets
        datasets.disable_progress_bars()


def run_benchmark(args) -> tuple[dict, list[str]]:
    """Run the benchmark that ``args`` (the options of ``scripts/benchmark_train.py``)
    describe; returns the results dict and the report lines (markdown tables).

    Raises:
        ValueError: for a config without ``model.config``, or a training split
            with fewer than ``warmup + steps`` batches.
    """
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
            raise ValueError(f"the training split has only {len(batches)} batches of "
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

    pairs = [("ours / reference", "ours", "reference"),
             ("ours / reference, compiled", "ours compiled", "reference compiled"),
             ("ours compiled / ours", "ours compiled", "ours"),
             ("reference compiled / reference", "reference compiled", "reference"),
             ("ours, additive / ours", "ours, additive", "ours")]
    ratios = {name: (ratio(a, b, "tokens_per_s"), ratio(a, b, "memory_mib"))
              for name, a, b in pairs}
    ratios["Trainer.fit / bare step (ours)"] = (ratio("ours, Trainer.fit", "ours", "tokens_per_s"),
                                                None)
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
    if getattr(args, "profile", None) is not None:
        ours = next(c_ for c_ in contestants if c_.name == "ours")
        lines += ["", f"## Profile of `ours` ({args.steps} steps; trace: "
                      f"{args.profile or 'not written'})", ""]
        lines += profile_steps(ours, timed, args.profile or None)
    out = {"rows": rows, "ratios": {k: {"throughput": v[0], "memory": v[1]}
                                    for k, v in ratios.items()},
           "parameters": num_params, "matmul_flops_per_s": matmul_rate,
           "flops_per_round": flops, "tokens_per_round": {"target": tgt_tokens,
                                                          "source_target": all_tokens},
           "load_average": {"before": load_before, "after": load_after},
           "device": device_name, "precision": precision}
    return out, lines
