"""Training with Lightning: the ``TranslationModule``, label-smoothed loss, the
learning-rate schedule, callbacks (speed, non-finite guard, ``max_time`` report),
atomic checkpoint IO, checkpoint averaging, the run directory, CPU runtime
settings and the ``TranslationCLI``.

Layer: above :mod:`model`, :mod:`data`, :mod:`inference` and :mod:`evaluation`;
below :mod:`benchmarks` and :mod:`commands`. The ``class_path`` names that
configs and saved ``config.yaml`` files use (``training.module.TranslationModule``,
``training.checkpoint_io.AtomicCheckpointIO``, ``training.callbacks.*``) stay
importable here.
"""
