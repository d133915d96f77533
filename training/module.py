"""Stage 4: the ``LightningModule`` that trains a :class:`model.Transformer` or a
:class:`model.RNNEncoderDecoder` (whichever ``config`` describes).

It owns what the network does not: the label-smoothed loss, Adam with
warmup + inverse-square-root decay, validation BLEU, and the self-contained
checkpoint (model config and SentencePiece model inside).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from data.tokenizer import PAD_ID, Tokenizer
from inference.checkpoint import CHECKPOINT_FORMAT
from model.build import build_model, config_from_dict
from model.config import ConfigError, TransformerConfig
from model.rnn import RNNConfig

from .evaluation import DecodingConfig, corpus_scores, decode_batch, length_limit_problem
from .loss import label_smoothed_cross_entropy

__all__ = ["TranslationModule", "NonFiniteLossError", "inverse_sqrt_schedule", "lr_multiplier",
           "gather_hypotheses", "rng_states", "set_rng_states", "CHECKPOINT_FORMAT"]

#: How far (as a fraction of the run) the clock must be ahead of the step
#: count before ``lr_time_budget`` moves the schedule by time.
TIME_BUDGET_MARGIN = 0.02


def inverse_sqrt_schedule(step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warmup to 1, then ``sqrt(warmup / step)``.

    ``step`` counts optimizer updates from 0; the multiplier of update ``s``
    is ``min((s + 1) / w, sqrt(w / (s + 1)))``.

    Source: Vaswani et al. 2017, eq. 3 (peak-normalised, as fairseq's
    ``inverse_sqrt``).
    """
    step = step + 1
    warmup_steps = max(1, warmup_steps)
    return min(step / warmup_steps, math.sqrt(warmup_steps / step))


def lr_multiplier(step: int, warmup_steps: int, cooldown_steps: int = 0,
                  total_steps: int | None = None) -> float:
    """Learning-rate multiplier of update ``step`` (from 0): warmup + inverse
    square root, optionally followed by a linear cooldown to 0.

    Without a cooldown this is :func:`inverse_sqrt_schedule`. With
    ``cooldown_steps = C > 0`` and ``total_steps = N``, the last ``C`` updates
    scale the inverse-square-root value reached at update ``N - C`` linearly
    down to 0 at update ``N`` (the "trapezoidal"/WSD-style anneal; an
    inverse-square-root schedule alone ends far above 0, at
    ``sqrt(warmup / N)`` of the peak). ``cooldown_steps = -1`` means every
    update after warmup, ``C = N - warmup_steps``: linear warmup, then linear
    decay from the peak to 0 at update ``N`` ("linear decay to zero"), which
    follows ``total_steps`` when it changes.

    Raises:
        model.config.ConfigError: if a cooldown is asked for without ``total_steps``, is
            longer than ``total_steps - warmup_steps``, or is negative other than -1.

    Source: Vaswani et al. 2017, eq. 3; Hägele et al. 2024, "Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations" (linear cooldown).
    """
    cooldown_steps = cooldown_length(cooldown_steps, warmup_steps, total_steps)
    if cooldown_steps == 0:
        return inverse_sqrt_schedule(step, warmup_steps)
    start = total_steps - cooldown_steps
    if step < start:
        return inverse_sqrt_schedule(step, warmup_steps)
    level = inverse_sqrt_schedule(max(start - 1, 0), warmup_steps)  # start 0: no warmup
    return level * max(0.0, (total_steps - step) / cooldown_steps)


def cooldown_length(cooldown_steps: int, warmup_steps: int, total_steps: int | None) -> int:
    """How many final updates the linear cooldown of :func:`lr_multiplier` spans:
    ``cooldown_steps`` itself, 0 for none, or ``total_steps - warmup_steps`` for -1.

    Raises:
        model.config.ConfigError: as :func:`lr_multiplier`.
    """
    if cooldown_steps < -1:
        raise ConfigError(f"model.cooldown_steps={cooldown_steps} must be >= 0, or -1 for a "
                          f"decay over every update after warmup")
    if cooldown_steps == 0:
        return 0
    if total_steps is None or total_steps <= 0:
        raise ConfigError(f"model.cooldown_steps={cooldown_steps} needs a known number of "
                         f"updates: set trainer.max_steps")
    if cooldown_steps == -1:
        if total_steps <= warmup_steps:
            raise ConfigError(f"model.cooldown_steps=-1 decays after model.warmup_steps="
                              f"{warmup_steps}, but trainer.max_steps={total_steps} ends "
                              f"before that; raise trainer.max_steps or lower the warmup")
        cooldown_steps = total_steps - warmup_steps
    if cooldown_steps > total_steps - warmup_steps:
        raise ConfigError(f"model.cooldown_steps={cooldown_steps} is longer than the "
                         f"{total_steps - warmup_steps} updates after model.warmup_steps="
                         f"{warmup_steps} (trainer.max_steps={total_steps}); lower it")
    return cooldown_steps


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step and
    the last good checkpoint to resume from."""


def rng_states() -> dict:
    """Every random generator training draws from, as plain tensors and tuples
    (loadable with ``torch.load(weights_only=True)``): torch CPU, each CUDA
    device, NumPy's global generator and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(),
              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` returned (CUDA states only where the
    device count matches, so a GPU checkpoint also loads on a CPU machine)."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def gather_hypotheses(hyps: dict[int, str]) -> dict[int, str]:
    """Merge every data-parallel process's ``{sentence index: hypothesis}``.

    Under DDP each process decodes its own share of the validation batches
    (some batches twice, where the batch count was padded to a multiple of the
    world size); corpus BLEU must be computed once over the whole set, not
    averaged over per-process BLEU (which is a different, wrong number). With
    one process, or without an initialised ``torch.distributed`` group, the
    dict is returned as it is.

    Every process must call this (it is a collective operation).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return hyps
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return hyps
    parts: list[dict[int, str] | None] = [None] * world_size
    torch.distributed.all_gather_object(parts, hyps)
    merged: dict[int, str] = {}
    for part in parts:
        merged.update(part or {})
    return merged


def _check_hyperparameters(lr: float, warmup_steps: int, cooldown_steps: int,
                           label_smoothing: float, betas: tuple, eps: float, weight_decay: float,
                           max_len_a: float, max_len_b: int, beam_size: int,
                           length_penalty: float, nonfinite_loss: str) -> None:
    """One clear error for a ``model.*`` setting that cannot work, before training starts.

    Raises:
        model.config.ConfigError: naming the key, its value and the fix.
    """
    problems = [
        (not lr > 0, f"model.lr={lr} must be positive (the peak learning rate), e.g. 0.002"),
        (warmup_steps < 0, f"model.warmup_steps={warmup_steps} must be >= 0"),
        (cooldown_steps < -1, f"model.cooldown_steps={cooldown_steps} must be >= 0, or -1 "
                              f"for a decay over every update after warmup"),
        (not 0 <= label_smoothing < 1,
         f"model.label_smoothing={label_smoothing} must be in [0, 1), e.g. 0.1"),
        (len(betas) != 2 or not all(0 <= b < 1 for b in betas),
         f"model.betas={list(betas)} must be two numbers in [0, 1), e.g. [0.9, 0.98]"),
        (not eps > 0, f"model.eps={eps} must be positive, e.g. 1.0e-09"),
        (weight_decay < 0, f"model.weight_decay={weight_decay} must be >= 0"),
        (beam_size < 1, f"model.beam_size={beam_size} must be at least 1 (1 is greedy)"),
        (not length_penalty >= 0, f"model.length_penalty={length_penalty} must be >= 0"),
        (nonfinite_loss not in ("stop", "skip"),
         f"model.nonfinite_loss={nonfinite_loss!r} is unknown; use 'stop' or 'skip'"),
    ]
    for bad, message in problems:
        if bad:
            raise ConfigError(message)
    limit = length_limit_problem(max_len_a, max_len_b, "model.max_len")
    if limit:
        raise ConfigError(limit)


class TranslationModule(L.LightningModule):
    """Train and validate an encoder–decoder network.

    Args:
        config: the Transformer's sizes (``model.config.TransformerConfig``).
            From Python, an ``RNNConfig`` or the dict of either (with its
            ``arch``, as saved in checkpoints) is accepted too.
        rnn: set (``model.rnn`` in YAML) to train the GRU encoder–decoder with
            additive attention of this ``model.rnn.RNNConfig`` instead of a
            Transformer; ``config`` must then be left unset. The network is
            ``model.build.build_model`` of the chosen config, and the
            checkpoint stores it under ``config`` with its ``arch``.
        vocab_size: overrides ``config.vocab_size``; the CLI links it to
            ``data.vocab_size`` so model and tokenizer always agree.
        label_smoothing: epsilon of label-smoothed cross-entropy.
        lr: peak learning rate, reached after ``warmup_steps`` updates.
        warmup_steps: linear warmup length in optimizer updates.
        lr_time_budget: when ``trainer.max_time`` would end training before
            ``trainer.max_steps`` (a slower machine than the recipe was sized
            for), fit the whole schedule, cooldown included, into the time:
            after warmup, once the elapsed fraction of ``max_time`` is more
            than 2% of the run ahead of ``step / max_steps``, the schedule is
            evaluated at ``elapsed / max_time * max_steps``, so the run still
            ends annealed. A machine that fits the step budget keeps the step
            schedule exactly (and deterministic); so does a run that
            ``max_epochs`` ends first. Single-process only (under DDP the
            processes' clocks could disagree): ignored there.
        cooldown_steps: the last this many updates of the run
            (``trainer.max_steps``) decay the learning rate linearly to 0;
            0 keeps the plain inverse-square-root schedule; -1 decays over
            every update after warmup, from the peak to 0 at ``max_steps``
            (linear decay to zero, :func:`lr_multiplier`).
        betas: Adam betas.
        eps: Adam epsilon.
        weight_decay: decoupled weight decay (AdamW); 0 gives Adam.
        max_len_a: decoding length limit ``a * source_length + b`` (a).
        max_len_b: decoding length limit (b).
        beam_size: beam size of validation decoding (1: greedy); also the
            default of ``scripts/evaluate.py`` and ``scripts/translate.py``.
        length_penalty: GNMT length-penalty exponent alpha for beam search.
        nonfinite_loss: what a NaN or infinite training loss or gradient
            norm does, checked before the optimizer step: ``"stop"`` raises
            :class:`NonFiniteLossError` naming the step and the last good
            checkpoint (the bad update is never applied or saved); ``"skip"``
            warns and leaves the weights and optimizer state of that update
            untouched (the learning-rate schedule still advances). Under DDP
            gradients are averaged first, so every process decides the same.

    Raises:
        ValueError: for an unknown ``nonfinite_loss`` or conflicting configs.
        NonFiniteLossError: during training, see ``nonfinite_loss``.

    Shapes:
        batches as produced by :func:`data.batching.collate_batch`.

    Source: Vaswani et al. 2017 §5.3–5.4 (Adam 0.9/0.98, warmup, label
    smoothing 0.1); Szegedy et al. 2016 (label smoothing).
    """

    def __init__(self, config: TransformerConfig = None,  # type: ignore[assignment]
                 rnn: RNNConfig | None = None, vocab_size: int | None = None,
                 label_smoothing: float = 0.1, lr: float = 1e-3, warmup_steps: int = 4000,
                 cooldown_steps: int = 0, lr_time_budget: bool = False,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-9,
                 weight_decay: float = 0.0, max_len_a: float = 1.2, max_len_b: int = 10,
                 beam_size: int = 1, length_penalty: float = 1.0,
                 nonfinite_loss: str = "stop"):
        super().__init__()
        _check_hyperparameters(lr=lr, warmup_steps=warmup_steps, cooldown_steps=cooldown_steps,
                               label_smoothing=label_smoothing, betas=tuple(betas), eps=eps,
                               weight_decay=weight_decay, max_len_a=max_len_a,
                               max_len_b=max_len_b, beam_size=beam_size,
                               length_penalty=length_penalty, nonfinite_loss=nonfinite_loss)
        if rnn is not None:
            if config is not None:
                raise ValueError(
                    "model: both config (a Transformer) and rnn (an RNN encoder-decoder) are "
                    "set; keep the one architecture to train and remove the other block")
            config = RNNConfig(**rnn) if isinstance(rnn, dict) else rnn
        if config is None:
            config = TransformerConfig()
        elif isinstance(config, dict):
            config = config_from_dict(config)
        overrides = {"pad_id": PAD_ID}
        if vocab_size is not None:
            overrides["vocab_size"] = vocab_size
        config = replace(config, **overrides)
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters({
            "config": asdict(config), "label_smoothing": label_smoothing, "lr": lr,
            "warmup_steps": warmup_steps, "cooldown_steps": cooldown_steps,
            "lr_time_budget": lr_time_budget, "betas": tuple(betas), "eps": eps,
            "weight_decay": weight_decay, "max_len_a": max_len_a, "max_len_b": max_len_b,
            "beam_size": beam_size, "length_penalty": length_penalty,
            "nonfinite_loss": nonfinite_loss})
        self.decoding = DecodingConfig(beam_size=beam_size, alpha=length_penalty,
                                       max_len_a=max_len_a, max_len_b=max_len_b)
        self.config = config
        self.model = build_model(config)
        self.tokenizer: Tokenizer | None = None
        self._val_hyps: dict[int, str] = {}
        self._step_loss: torch.Tensor | None = None  # this update's loss, checked with its gradients
        self.skipped_batches = 0
        self._epoch_running: int | None = None  # set in on_train_epoch_start (max_time message)

    # -------------------------------------------------------------- plumbing
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.tokenizer is not None:
            self.set_tokenizer(datamodule.tokenizer)
            log_dir = self.trainer.log_dir
            if stage == "fit" and log_dir and self.trainer.loggers and self.trainer.is_global_zero:
                # The run keeps its own copy of the tokenizer beside its logs (without a
                # logger there are no logs: log_dir would be the working directory).
                os.makedirs(log_dir, exist_ok=True)
                self.tokenizer.save(os.path.join(log_dir, "spm.model"))

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Attach the tokenizer; its vocabulary must match the model's.

        Raises:
            ValueError: if ``tokenizer.vocab_size`` differs from ``config.vocab_size``.
        """
        if tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} pieces but the model config has "
                f"vocab_size={self.config.vocab_size}; they must agree (the CLI links "
                f"data.vocab_size to model.vocab_size)")
        self.tokenizer = tokenizer

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["format"] = CHECKPOINT_FORMAT
        if self.tokenizer is not None:
            checkpoint["tokenizer_model"] = self.tokenizer.model_proto
        # A resumed run draws the same dropout masks as an uninterrupted one.
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "tokenizer_model" in checkpoint:
            self.set_tokenizer(Tokenizer(checkpoint["tokenizer_model"]))
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

    # -------------------------------------------------------------- training
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Label-smoothed cross-entropy per target token, padding ignored.

        Returns:
            (loss averaged over real target tokens, number of those tokens).
        """
        labels = batch["labels"]  # (B, T)
        keep = labels != PAD_ID  # (B, T): only these positions reach the output layer
        logits = self.model(batch["src"], batch["src_valid_len"], batch["tgt_in"],
                            output_mask=keep)  # (N, V)
        # F.cross_entropy(..., label_smoothing, ignore_index) in one softmax pass.
        loss = label_smoothed_cross_entropy(logits, labels[keep],
                                            self.hparams.label_smoothing, PAD_ID)
        return loss, batch["tgt_valid_len"].sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        self._step_loss = loss.detach()
        self.log("train_loss", loss, prog_bar=True, batch_size=int(batch["src"].shape[0]))
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        """Clip the global gradient norm (``trainer.gradient_clip_val``) and, before
        the optimizer applies anything, act on a non-finite loss or gradient norm
        as ``nonfinite_loss`` says. One host sync per update (the progress bar
        reads the loss every step anyway). With a loss scaler (16-mixed), whose
        job it is to skip overflowing steps, Lightning's own clipping runs."""
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None or \
                gradient_clip_algorithm not in (None, "norm"):
            super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"]
                  if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, gradient_clip_val or float("inf"))
        loss = norm if self._step_loss is None else self._step_loss
        if bool(torch.isfinite(norm) & torch.isfinite(loss)):
            return
        what = "loss" if not torch.isfinite(loss) else "gradient norm"
        where = (f"non-finite training {what} (loss {loss.item()}, gradient norm {norm.item()}) "
                 f"at global step {self.global_step} (epoch {self.current_epoch})")
        if self.hparams.nonfinite_loss == "skip":
            for p in params:
                p.grad = None  # the optimizer leaves parameters without gradients untouched
            self.skipped_batches += 1
            rank_zero_warn(f"{where}: skipped this batch's update "
                           f"(model.nonfinite_loss=skip; {self.skipped_batches} skipped so far)")
            return
        raise NonFiniteLossError(f"{where}; stopped before the update, nothing saved after it. "
                                 f"{self._last_good_checkpoint()} Lower model.lr, raise "
                                 f"model.warmup_steps, train with --trainer.precision 32-true, "
                                 f"or set model.nonfinite_loss=skip to skip such batches")

    def _last_good_checkpoint(self) -> str:
        """Sentence naming the newest checkpoint this run wrote, and its step."""
        paths = {path for callback in self.trainer.checkpoint_callbacks
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

    def configure_optimizers(self):
        params_decay = [p for n, p in self.named_parameters() if p.dim() >= 2]
        params_no_decay = [p for n, p in self.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": params_decay, "weight_decay": self.hparams.weight_decay},
             {"params": params_no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=tuple(self.hparams.betas), eps=self.hparams.eps)
        warmup = self.hparams.warmup_steps
        # Without a Trainer (a bare training loop, the benchmarks) the run length
        # is unknown, so there is no cooldown.
        cooldown = self.hparams.get("cooldown_steps", 0) if self._trainer is not None else 0
        total = None
        if cooldown != 0:
            total = self.trainer.max_steps if self.trainer.max_steps > 0 else None
            lr_multiplier(0, warmup, cooldown, total)  # a bad combination fails before step 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(self.schedule_step(step), warmup, cooldown,
                                                  total))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _timer(self):
        trainer = self._trainer
        if trainer is None:
            return None
        timers = [c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.Timer)]
        return timers[0] if timers else None

    def schedule_step(self, step: int) -> float:
        """Where update ``step`` is in the learning-rate schedule: ``step`` itself,
        or with ``lr_time_budget`` the larger time-proportional position
        ``elapsed / max_time * max_steps`` (see the class docstring)."""
        if not self.hparams.get("lr_time_budget") or self._trainer is None:
            return step
        trainer, timer = self.trainer, self._timer()
        if timer is None or timer.time_remaining() is None or trainer.max_steps <= 0 \
                or trainer.world_size > 1 or step < self.hparams.warmup_steps:
            return step
        total = trainer.max_steps
        if trainer.estimated_stepping_batches < total:  # max_epochs ends the run first
            return step
        time_fraction = timer.time_elapsed() / (timer.time_elapsed() + timer.time_remaining())
        # Only once the clock is clearly ahead of the steps (a machine that fits
        # the budget keeps the step schedule exactly, and stays deterministic).
        if time_fraction <= step / total + TIME_BUDGET_MARGIN:
            return step
        return max(step, time_fraction * total)

    def on_train_epoch_start(self) -> None:
        # Remembered for the max_time message: Lightning has already counted
        # a cut epoch as done (current_epoch + 1) by the time on_train_end runs.
        self._epoch_running = self.current_epoch

    def on_train_end(self) -> None:
        """Say so when ``trainer.max_time`` ended training before its budget: the
        epoch it cut, counted from 1 (the progress bar's ``Epoch`` counts from 0),
        the global step and the budget."""
        trainer, timer = self.trainer, self._timer()
        if timer is None or timer.time_remaining() is None or timer.time_remaining() > 0:
            return
        max_steps, step = trainer.max_steps, self.global_step
        if max_steps > 0 and step >= max_steps:
            return
        budget = f" of max_steps={max_steps}" if max_steps > 0 else ""
        cooldown = self.hparams.get("cooldown_steps", 0)
        annealed = ""
        if self.hparams.get("lr_time_budget") and trainer.world_size == 1:
            annealed = " model.lr_time_budget fitted the schedule into the time;"
        elif cooldown != 0 and max_steps > 0:
            cooldown = cooldown_length(cooldown, self.hparams.warmup_steps, max_steps)
            annealed = (" the learning-rate cooldown never started;" if step < max_steps - cooldown
                        else " the learning-rate cooldown did not reach 0;")
        epoch = self.current_epoch if self._epoch_running is None else self._epoch_running
        rank_zero_warn(f"trainer.max_time stopped training in epoch {epoch + 1} at "
                       f"global step {step}{budget} ({timer.time_elapsed():.0f} s of "
                       f"training; epochs counted from 1, the progress bar's 'Epoch {epoch}');"
                       f"{annealed} the time ran out before the training budget "
                       f"(max_steps or max_epochs). "
                       f"Raise trainer.max_time to train the whole budget")

    # ------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_hyps = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, _ = self.loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=int(batch["src"].shape[0]),
                 sync_dist=True)
        if self.trainer.sanity_checking or self.tokenizer is None:
            return
        # Decoded in float32 as evaluate.py decodes the test set: bf16 logits
        # would flip near-ties, and BLEU picks best.ckpt.
        with torch.autocast(self.device.type, enabled=False):
            hyps = decode_batch(self.model, self.tokenizer, batch, self.decoding)
        self._val_hyps.update((i, nbest[0].text) for i, nbest in zip(batch["index"].tolist(), hyps))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.tokenizer is None:
            return
        self._val_hyps = gather_hypotheses(self._val_hyps)
        if not self._val_hyps:
            return
        references = self.trainer.datamodule.references["valid"]
        missing = len(references) - len(self._val_hyps)
        limit = self.trainer.limit_val_batches
        if missing and isinstance(limit, float) and limit == 1.0:
            rank_zero_warn(f"validation decoded {len(self._val_hyps)} of {len(references)} "
                           f"sentences; the {missing} missing count as empty hypotheses in BLEU")
        hyps = [self._val_hyps.get(i, "") for i in range(len(references))]
        # Every process holds the whole validation set's hypotheses now, so the
        # scores are the same everywhere: no averaging across processes.
        scores = corpus_scores(hyps, references)
        self.log("val_bleu", scores["bleu"], prog_bar=True)
        self.log("val_chrf", scores["chrf"])
