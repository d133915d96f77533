"""A Lightning callback that measures training speed, wall time and peak memory."""

from __future__ import annotations

import resource
import sys
import time

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["SpeedMonitor", "peak_memory_mb"]


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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._segment_start, self._train_time, self._tokens = None, 0.0, 0
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
