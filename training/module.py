"""Stage 4: the ``LightningModule`` that trains a :class:`model.Transformer` or a
:class:`model.RNNEncoderDecoder` (whichever ``config`` describes).

It owns what the network does not: the label-smoothed loss, Adam with
warmup + inverse-square-root decay, validation BLEU, and the self-contained
checkpoint (model config and SentencePiece model inside).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, replace

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from data.tokenizer import PAD_ID, Tokenizer
from evaluation.metrics import corpus_scores
from inference.checkpoint import CHECKPOINT_FORMAT
from inference.decoding import DecodingConfig, decode_batch, length_limit_problem
from model.build import build_model, config_from_dict
from model.config import ConfigError, TransformerConfig
from model.rnn import RNNConfig

from .callbacks import MaxTimeReport, NonFiniteLossError, NonFiniteLossGuard, trainer_timer
from .loss import label_smoothed_cross_entropy
from .schedule import LearningRateSchedule, inverse_sqrt_schedule, lr_multiplier, \
    time_budget_step

__all__ = ["TranslationModule", "NonFiniteLossError", "inverse_sqrt_schedule", "lr_multiplier",
           "gather_hypotheses", "rng_states", "set_rng_states", "CHECKPOINT_FORMAT"]

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


def check_settings(lr: float, warmup_steps: int, cooldown_steps: int, label_smoothing: float,
                   betas: tuple, eps: float, weight_decay: float, max_len_a: float,
                   max_len_b: int, beam_size: int, length_penalty: float, **_) -> None:
    """One clear error for a ``model.*`` setting that cannot work, checked once when
    the module is built (what needs ``trainer.max_steps`` is checked when the
    schedule is built, before update 0; ``nonfinite_loss`` by its guard).

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
            checkpoint; ``"skip"`` leaves that update out
            (:class:`training.callbacks.NonFiniteLossGuard`).

    The module adds two callbacks of its own (``configure_callbacks``): the
    non-finite guard and :class:`training.callbacks.MaxTimeReport`. The
    learning-rate schedule is :class:`training.schedule.LearningRateSchedule`.

    Raises:
        model.config.ConfigError: for a setting that cannot work (one line naming it).
        ValueError: for conflicting configs.
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
        # The training settings, as named in the signature (and saved in checkpoints).
        settings = {name: value for name, value in locals().items()
                    if name not in ("self", "__class__", "config", "rnn", "vocab_size")}
        settings["betas"] = tuple(betas)
        super().__init__()
        check_settings(**settings)
        self._nonfinite_guard = NonFiniteLossGuard(nonfinite_loss)
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
        self.save_hyperparameters({"config": asdict(config), **settings})
        self.decoding = DecodingConfig(beam_size=beam_size, alpha=length_penalty,
                                       max_len_a=max_len_a, max_len_b=max_len_b)
        self.config = config
        self.model = build_model(config)
        self.tokenizer: Tokenizer | None = None
        self._val_hyps: dict[int, str] = {}

    @property
    def skipped_batches(self) -> int:
        """Updates left out for a non-finite loss (``nonfinite_loss="skip"``)."""
        return self._nonfinite_guard.skipped_batches

    def configure_callbacks(self) -> list:
        """The non-finite guard and the ``max_time`` report, in every run of this
        module, whatever the config lists (saved configs of older runs too)."""
        return [self._nonfinite_guard, MaxTimeReport()]

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
        self.log("train_loss", loss, prog_bar=True, batch_size=int(batch["src"].shape[0]))
        return loss

    def configure_optimizers(self):
        params_decay = [p for n, p in self.named_parameters() if p.dim() >= 2]
        params_no_decay = [p for n, p in self.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": params_decay, "weight_decay": self.hparams.weight_decay},
             {"params": params_no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=tuple(self.hparams.betas), eps=self.hparams.eps)
        # Without a Trainer (a bare training loop, the benchmarks) the run length
        # is unknown, so there is no cooldown. Built (and checked) once, here.
        cooldown = self.hparams.get("cooldown_steps", 0) if self._trainer is not None else 0
        total = None
        if cooldown != 0 and self.trainer.max_steps > 0:
            total = self.trainer.max_steps
        schedule = LearningRateSchedule(self.hparams.warmup_steps, cooldown, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule(self.schedule_step(step)))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def schedule_step(self, step: int) -> float:
        """Where update ``step`` is in the learning-rate schedule: ``step`` itself,
        or with ``lr_time_budget`` the larger time-proportional position
        ``elapsed / max_time * max_steps`` (see the class docstring)."""
        if not self.hparams.get("lr_time_budget") or self._trainer is None:
            return step
        trainer, timer = self.trainer, trainer_timer(self.trainer)
        if timer is None or timer.time_remaining() is None or trainer.max_steps <= 0 \
                or trainer.world_size > 1 or step < self.hparams.warmup_steps:
            return step
        if trainer.estimated_stepping_batches < trainer.max_steps:  # max_epochs ends it first
            return step
        return time_budget_step(step, trainer.max_steps, timer.time_elapsed(),
                                timer.time_remaining())

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
