"""Statistical significance of a BLEU difference: sacreBLEU's paired bootstrap resampling.

Used by the attention comparison (:mod:`benchmarks.compare_report`); any two
systems' hypotheses on the same references can be compared with it.
"""

from __future__ import annotations

__all__ = ["paired_bootstrap"]


def paired_bootstrap(baseline: list[str], system: list[str], references: list[str],
                     n_samples: int = 1000) -> dict:
    """sacreBLEU's paired bootstrap resampling (``paired_bs``) of ``system``
    against ``baseline`` on the same ``references``, cased BLEU.

    Returns:
        ``{"baseline_bleu", "system_bleu", "p_value", "signature"}``: the p-value
        of the null hypothesis that the system is no better or worse than the
        baseline (sacreBLEU's, two-sided as it computes it).

    Source: Koehn 2004, "Statistical Significance Tests for Machine
    Translation Evaluation"; sacreBLEU's ``--paired-bs`` (``sacrebleu.significance``).
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    signatures, scores = PairedTest([("baseline", baseline), ("system", system)],
                                    {"BLEU": BLEU()}, [references], test_type="bs",
                                    n_samples=n_samples)()
    base, other = scores["BLEU"]
    return {"baseline_bleu": float(base.score), "system_bleu": float(other.score),
            "p_value": float(other.p_value), "signature": str(signatures["BLEU"])}
