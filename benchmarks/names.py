"""What the benchmark commands need before torch loads (their ``--help`` and
argument checks): the attention variants and the comparison's default configs."""

from pathlib import Path

__all__ = ["DEFAULT_CONFIGS", "REFERENCE", "VARIANTS"]

#: Variant name -> (scoring, keep_weights, additive kernel). The kernel is None for dot;
#: ``dot-fused`` keeps no weights (PyTorch's fused scaled-dot-product kernel).
VARIANTS = {
    "dot": ("dot", True, None),
    "dot-fused": ("dot", False, None),
    "additive": ("additive", True, "auto"),
    "additive-chunked": ("additive", True, "chunked"),
    "additive-naive": ("additive", True, "naive"),
}
#: The variant every ratio of ``scripts/benchmark_attention.py`` is taken against.
REFERENCE = "dot"

#: The configs ``scripts/compare_attention.py`` compares by default.
DEFAULT_CONFIGS = [Path(__file__).resolve().parents[1] / "configs" / f"compare_{name}.yaml"
                   for name in ("transformer_dot", "transformer_additive", "rnn")]
