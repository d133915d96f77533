"""Lightning callbacks of training: speed, wall time and peak memory
(``SpeedMonitor``), the non-finite loss guard (``NonFiniteLossGuard``) and the
``trainer.max_time`` report (``MaxTimeReport``)."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from model.config import ConfigError

from .schedule import cooldown_length

__all__ = ["MaxTimeReport", "NonFiniteLossError", "NonFiniteLossGuard", "SpeedMonitor",
           "last_good_checkpoint", "peak_memory_mb", "trainer_timer"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step and
    the last good checkpoint to resume from."""


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far, in MiB.

    On a CUDA device: ``torch.cuda.max_memory_allocated`` (tensor memory the
    caching allocator handed out; its reserved pool and the CUDA context are
    not counted). Elsewhere: the peak resident set size of the process
    (``getrusage(RUSAGE_SELF).ru_maxrss``), which counts everything the
    process holds: the interpreter, libraries, data and tensors.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10  # bytes / KiB


class SpeedMonitor(L.Callback):
    """Log training throughput, wall time and peak memory at every validation.

    Logged with the validation metrics of the same step (so ``metrics.csv``
    gives BLEU against steps and against seconds):

    - ``train_tokens``: target tokens trained on so far (the batch entry
      ``token_key`` summed: real target tokens with EOS, no padding).
    - ``train_time``: seconds spent training, from the first training batch
      to now, without validation (each validation's time counts from its
      start to the next training batch, so checkpoint writing is left out).
    - ``train_tokens_per_sec``: ``train_tokens / train_time``.
    - ``wall_time``: seconds since training started, validation included.

    A run resumed from a checkpoint counts on from the values saved in it.
    - ``peak_memory_mb``: see :func:`peak_memory_mb` (CUDA tensor memory on
      a GPU, peak resident set size of the process on a CPU).

    Nothing is logged during the sanity check or by ``trainer.validate``.

    Args:
        token_key: batch dict entry counting a sequence's tokens; batches
            that are not dicts holding it count 0 tokens.
    """

    def __init__(self, token_key: str = "tgt_valid_len"):
        super().__init__()
        self.token_key = token_key
        self._start: float | None = None
        self._segment_start: float | None = None
        self._train_time = 0.0
        self._tokens: torch.Tensor | int = 0
        self._resumed: dict[str, float] | None = None

    def state_dict(self) -> dict[str, float]:
        """Tokens, training time and wall time so far, saved in checkpoints: a
        resumed run (``--ckpt_path last``) goes on counting from them."""
        now = time.perf_counter()
        running = now - self._segment_start if self._segment_start is not None else 0.0
        return {"train_tokens": float(self._tokens), "train_time": self._train_time + running,
                "wall_time": now - self._start if self._start is not None else 0.0}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._resumed = dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed, self._resumed = self._resumed or {}, None
        self._start = time.perf_counter() - resumed.get("wall_time", 0.0)
        self._segment_start = None
        self._train_time = resumed.get("train_time", 0.0)
        self._tokens = resumed.get("train_tokens", 0)
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._segment_start is None:
            self._segment_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(batch, dict) and self.token_key in batch:
            # Summed on the device: no synchronization per step.
            self._tokens = self._tokens + batch[self.token_key].detach().sum()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._segment_start is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the queued training steps count as training
        self._train_time += time.perf_counter() - self._segment_start
        self._segment_start = None

    def metrics(self, device: torch.device) -> dict[str, float]:
        """The values logged at a validation (see the class docstring)."""
        tokens = float(self._tokens)
        return {"train_tokens": tokens, "train_time": self._train_time,
                "train_tokens_per_sec": tokens / self._train_time if self._train_time else 0.0,
                "wall_time": time.perf_counter() - self._start,
                "peak_memory_mb": peak_memory_mb(device)}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._start is None or trainer.state.fn != TrainerFn.FITTING:
            return
        for name, value in self.metrics(pl_module.device).items():
            pl_module.log(name, value)


def trainer_timer(trainer: L.Trainer) -> L.pytorch.callbacks.Timer | None:
    """The trainer's ``Timer`` (``trainer.max_time`` adds one), or None."""
    timers = [c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.Timer)]
    return timers[0] if timers else None


def _total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all ``tensors`` together, as ``clip_grad_norm_`` computes it."""
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm(tensors)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


class NonFiniteLossGuard(L.Callback):
    """Act on a NaN or infinite training loss or gradient norm before the
    optimizer applies it (``model.nonfinite_loss``; ``TranslationModule`` adds
    this callback itself through ``configure_callbacks``).

    Args:
        action: ``"stop"`` raises :class:`NonFiniteLossError` naming the step and
            the last good checkpoint (the bad update is never applied or saved);
            ``"skip"`` warns and drops that update's gradients, so the weights and
            optimizer state stay as they were (the learning-rate schedule still
            advances). Under DDP gradients are averaged first, so every process
            decides the same. With a loss scaler (``16-mixed``), whose job it is to
            skip overflowing steps, the guard stands aside.

    Raises:
        model.config.ConfigError: for an unknown ``action``.
        NonFiniteLossError: during training, with ``"stop"``.

    Cost: one gradient-norm reduction and one host sync per update.
    """

    ACTIONS = ("stop", "skip")

    def __init__(self, action: str = "stop"):
        if action not in self.ACTIONS:
            raise ConfigError(f"model.nonfinite_loss={action!r} is unknown; use 'stop' or 'skip'")
        self.action = action
        self.skipped_batches = 0
        self._loss: torch.Tensor | None = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]
                  if p.grad is not None]
        if not params:
            return
        norm = _total_norm([p.grad for p in params])
        loss = norm if self._loss is None else self._loss
        if bool(torch.isfinite(norm) & torch.isfinite(loss)):
            return
        what = "loss" if not torch.isfinite(loss) else "gradient norm"
        where = (f"non-finite training {what} (loss {loss.item()}, gradient norm {norm.item()}) "
                 f"at global step {trainer.global_step} (epoch {trainer.current_epoch})")
        if self.action == "skip":
            for p in params:
                p.grad = None  # the optimizer leaves parameters without gradients untouched
            self.skipped_batches += 1
            rank_zero_warn(f"{where}: skipped this batch's update "
                           f"(model.nonfinite_loss=skip; {self.skipped_batches} skipped so far)")
            return
        raise NonFiniteLossError(f"{where}; stopped before the update, nothing saved after it. "
                                 f"{last_good_checkpoint(trainer)} Lower model.lr, raise "
                                 f"model.warmup_steps, train with --trainer.precision 32-true, "
                                 f"or set model.nonfinite_loss=skip to skip such batches")


def last_good_checkpoint(trainer: L.Trainer) -> str:
    """A sentence naming the newest checkpoint this run wrote, and its step."""
    paths = {path for callback in trainer.checkpoint_callbacks
             if getattr(callback, "dirpath", None)
             for path in Path(callback.dirpath).glob("*.ckpt")}
    if not paths:
        return "No checkpoint was written before it, so nothing to resume from."
    newest = max(paths, key=lambda p: p.stat().st_mtime_ns)
    try:
        step = torch.load(newest, map_location="cpu", weights_only=True)["global_step"]
        at = f" (global step {step})"
    except Exception:  # noqa: BLE001 - the message is best effort
        at = ""
    return (f"The last good checkpoint is {newest}{at}; resume from it with "
            f"--ckpt_path {newest}.")


class MaxTimeReport(L.Callback):
    """Say so when ``trainer.max_time`` ended training before its budget: the
    epoch it cut, counted from 1 (the progress bar's ``Epoch`` counts from 0),
    the global step, the budget and what became of the learning-rate cooldown
    (``TranslationModule`` adds this callback itself).

    Reads ``lr_time_budget``, ``cooldown_steps`` and ``warmup_steps`` from the
    module's ``hparams``; warns once on rank zero, raises nothing.
    """

    def __init__(self):
        self._epoch_running: int | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # Remembered: Lightning has already counted a cut epoch as done
        # (current_epoch + 1) by the time on_train_end runs.
        self._epoch_running = trainer.current_epoch

    def on_train_end(self, trainer, pl_module) -> None:
        timer = trainer_timer(trainer)
        if timer is None or timer.time_remaining() is None or timer.time_remaining() > 0:
            return
        max_steps, step = trainer.max_steps, trainer.global_step
        if max_steps > 0 and step >= max_steps:
            return
        hparams = pl_module.hparams
        budget = f" of max_steps={max_steps}" if max_steps > 0 else ""
        cooldown = hparams.get("cooldown_steps", 0)
        annealed = ""
        if hparams.get("lr_time_budget") and trainer.world_size == 1:
            annealed = " model.lr_time_budget fitted the schedule into the time;"
        elif cooldown != 0 and max_steps > 0:
            cooldown = cooldown_length(cooldown, hparams.get("warmup_steps", 0), max_steps)
            annealed = (" the learning-rate cooldown never started;" if step < max_steps - cooldown
                        else " the learning-rate cooldown did not reach 0;")
        epoch = trainer.current_epoch if self._epoch_running is None else self._epoch_running
        rank_zero_warn(f"trainer.max_time stopped training in epoch {epoch + 1} at "
                       f"global step {step}{budget} ({timer.time_elapsed():.0f} s of "
                       f"training; epochs counted from 1, the progress bar's 'Epoch {epoch}');"
                       f"{annealed} the time ran out before the training budget "
                       f"(max_steps or max_epochs). "
                       f"Raise trainer.max_time to train the whole budget")
