"""Evaluation: sacreBLEU scores, the Multi30k papers' BLEU, choosing checkpoints and
decoding settings on val, and significance.

Layer: above :mod:`model`, :mod:`data` and :mod:`inference`; below :mod:`training`
(which scores validation BLEU with :func:`evaluation.metrics.corpus_scores`),
:mod:`benchmarks` and :mod:`commands`. Imports no Lightning.

Modules: ``metrics`` (cased BLEU and chrF, the papers' lowercased Moses-tokenized
BLEU and its official references), ``selection`` (score a translator on a split;
choose checkpoint, beam and length penalty on val, report test),
``significance`` (sacreBLEU's paired bootstrap).
"""
