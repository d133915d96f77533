"""The learning-rate schedule: linear warmup, inverse square root, an optional
linear cooldown to 0, and ``lr_time_budget``'s time-proportional position.

:class:`LearningRateSchedule` checks its settings once, when it is built
(``TranslationModule.configure_optimizers``, before update 0); calling it per
update only computes.

Source: Vaswani et al. 2017, eq. 3 (fairseq's ``inverse_sqrt``, peak-normalised);
Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
Training Durations" (linear cooldown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.config import ConfigError

__all__ = ["LearningRateSchedule", "TIME_BUDGET_MARGIN", "cooldown_length",
           "inverse_sqrt_schedule", "lr_multiplier", "time_budget_step"]

#: How far (as a fraction of the run) the clock must be ahead of the step
#: count before ``lr_time_budget`` moves the schedule by time.
TIME_BUDGET_MARGIN = 0.02


def inverse_sqrt_schedule(step: float, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warmup to 1, then ``sqrt(warmup / step)``.

    ``step`` counts optimizer updates from 0; the multiplier of update ``s``
    is ``min((s + 1) / w, sqrt(w / (s + 1)))``.

    Source: Vaswani et al. 2017, eq. 3 (peak-normalised, as fairseq's
    ``inverse_sqrt``).
    """
    step = step + 1
    warmup_steps = max(1, warmup_steps)
    return min(step / warmup_steps, math.sqrt(warmup_steps / step))


def cooldown_length(cooldown_steps: int, warmup_steps: int, total_steps: int | None) -> int:
    """How many final updates the linear cooldown spans: ``cooldown_steps`` itself,
    0 for none, or ``total_steps - warmup_steps`` for -1.

    Raises:
        model.config.ConfigError: if a cooldown is asked for without ``total_steps``, is
            longer than ``total_steps - warmup_steps``, or is negative other than -1.
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


@dataclass(frozen=True)
class LearningRateSchedule:
    """Multiplier of the peak learning rate per optimizer update (from 0).

    Without a cooldown this is :func:`inverse_sqrt_schedule`. With
    ``cooldown_steps = C > 0`` and ``total_steps = N``, the last ``C`` updates
    scale the inverse-square-root value reached at update ``N - C`` linearly
    down to 0 at update ``N`` (the "trapezoidal"/WSD-style anneal; an
    inverse-square-root schedule alone ends far above 0, at
    ``sqrt(warmup / N)`` of the peak). ``cooldown_steps = -1`` means every
    update after warmup, ``C = N - warmup_steps``: linear warmup, then linear
    decay from the peak to 0 at update ``N`` ("linear decay to zero").

    Args:
        warmup_steps: linear warmup length in updates (``model.warmup_steps``).
        cooldown_steps: as ``model.cooldown_steps``: 0, C > 0, or -1.
        total_steps: the run's length in updates (``trainer.max_steps``); needed
            for a cooldown.

    Raises:
        model.config.ConfigError: for settings that cannot work (see
            :func:`cooldown_length`), when the schedule is built.
    """

    warmup_steps: int
    cooldown_steps: int = 0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"model.warmup_steps={self.warmup_steps} must be >= 0")
        # the cooldown in updates (-1 resolved), checked here once
        object.__setattr__(self, "cooldown", cooldown_length(
            self.cooldown_steps, self.warmup_steps, self.total_steps))

    @property
    def cooldown_start(self) -> int | None:
        """The first update of the cooldown, or None without one."""
        return self.total_steps - self.cooldown if self.cooldown else None

    def __call__(self, step: float) -> float:
        """The multiplier of update ``step`` (a float position is allowed, as
        :func:`time_budget_step` gives)."""
        start = self.cooldown_start
        if start is None or step < start:
            return inverse_sqrt_schedule(step, self.warmup_steps)
        level = inverse_sqrt_schedule(max(start - 1, 0), self.warmup_steps)  # start 0: no warmup
        return level * max(0.0, (self.total_steps - step) / self.cooldown)


def lr_multiplier(step: int, warmup_steps: int, cooldown_steps: int = 0,
                  total_steps: int | None = None) -> float:
    """``LearningRateSchedule(warmup_steps, cooldown_steps, total_steps)(step)``: one
    value, the settings checked on each call (for tests and plots; training
    builds the schedule once).

    Raises:
        model.config.ConfigError: as :class:`LearningRateSchedule`.
    """
    return LearningRateSchedule(warmup_steps, cooldown_steps, total_steps)(step)


def time_budget_step(step: int, total_steps: int, elapsed: float, remaining: float) -> float:
    """``lr_time_budget``'s position in the schedule: ``step`` itself while the
    clock keeps up with the steps, else the larger ``elapsed / (elapsed +
    remaining) * total_steps`` once that fraction is more than
    :data:`TIME_BUDGET_MARGIN` of the run ahead of ``step / total_steps`` (a
    machine that fits the step budget keeps the step schedule exactly, and stays
    deterministic).

    Args:
        step: the update (from 0); total_steps: ``trainer.max_steps``;
        elapsed, remaining: seconds of ``trainer.max_time`` used and left.
    """
    time_fraction = elapsed / (elapsed + remaining)
    if time_fraction <= step / total_steps + TIME_BUDGET_MARGIN:
        return step
    return max(step, time_fraction * total_steps)
