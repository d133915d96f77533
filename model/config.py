"""The Transformer's configuration: every size in one typed dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from .attention import SCORING_FUNCTIONS

__all__ = ["ConfigError", "TransformerConfig"]


class ConfigError(ValueError):
    """A model configuration that cannot be built; the message names the
    config keys (``model.config.<key>``), their values and the fix."""


@dataclass
class TransformerConfig:
    """Sizes and choices of an encoder–decoder Transformer.

    Each field maps to one key of the ``model.config`` block of a YAML file in
    ``configs/``; ``arch`` tells it from :class:`~model.rnn.RNNConfig` in
    checkpoints. ``attention`` picks the scoring function of every attention
    layer (encoder self-attention, decoder masked self-attention and
    encoder–decoder attention).

    Raises:
        ValueError: on construction, if ``num_hiddens`` is not divisible by
            ``num_heads``, ``attention`` is unknown, or a size is not positive.

    Source: Vaswani et al. 2017, Table 3 (base: D=512, H=8, 6 blocks,
    FFN 2048); d2l.ai §11.7.
    """

    arch: Literal["transformer"] = "transformer"
    """Architecture tag, always ``"transformer"``: saved in checkpoints so that
    ``model.build.config_from_dict`` rebuilds the right config."""
    vocab_size: int = 8000
    """V: size of the (joint source+target) vocabulary, set from the tokenizer."""
    num_hiddens: int = 256
    """D: width of embeddings, attention and residual stream."""
    ffn_num_hiddens: int = 1024
    """Hidden width of the position-wise feed-forward network."""
    num_heads: int = 4
    """H: attention heads per attention layer; must divide ``num_hiddens``."""
    num_enc_blks: int = 3
    """Number of encoder blocks."""
    num_dec_blks: int = 3
    """Number of decoder blocks."""
    dropout: float = 0.1
    """Dropout on the embeddings and on every residual branch."""
    attention_dropout: float = 0.0
    """Dropout on the attention weights (fairseq's ``attention_dropout``)."""
    activation_dropout: float = 0.0
    """Dropout inside the FFN after the ReLU (fairseq's ``activation_dropout``)."""
    attention: str = "dot"
    """Scoring of every attention layer: ``"dot"`` (scaled dot product) or
    ``"additive"`` (Bahdanau)."""
    norm_first: bool = True
    """Pre-LayerNorm (``LN`` before each sub-layer, plus a final ``LN``) when
    True; post-LayerNorm ``LN(x + sublayer(x))`` as in the paper when False."""
    tie_embeddings: bool = True
    """Share source embedding, target embedding and output projection (the
    vocabulary is joint)."""
    max_len: int = 256
    """Longest source or target sequence (in tokens) the positional encoding
    covers."""
    pad_id: int = 0
    """Padding token id (embedding row kept at zero)."""

    def __post_init__(self):
        # Messages name the YAML keys (model.config.*) a user sets.
        if self.arch != "transformer":
            raise ConfigError(f"model.config: TransformerConfig needs arch='transformer', "
                             f"got arch={self.arch!r}")
        # Sizes first: num_heads=0 would otherwise fail the divisibility check
        # below with a ZeroDivisionError instead of this message.
        for name in ("vocab_size", "num_hiddens", "ffn_num_hiddens", "num_heads",
                     "num_enc_blks", "num_dec_blks", "max_len"):
            if getattr(self, name) <= 0:
                linked = " (the CLI sets it from data.vocab_size)" if name == "vocab_size" else ""
                raise ConfigError(f"model.config.{name}={getattr(self, name)}{linked} must be "
                                 f"positive")
        if self.num_hiddens % self.num_heads != 0:
            divisors = [h for h in range(1, min(self.num_hiddens, 32) + 1)
                        if self.num_hiddens % h == 0]
            raise ConfigError(
                f"model.config.num_hiddens={self.num_hiddens} is not divisible by "
                f"model.config.num_heads={self.num_heads} (each head gets num_hiddens / "
                f"num_heads dimensions); set model.config.num_heads to a divisor of "
                f"{self.num_hiddens}, e.g. {', '.join(map(str, divisors))}, or change "
                f"model.config.num_hiddens")
        if self.attention not in SCORING_FUNCTIONS:
            raise ConfigError(
                f"model.config.attention={self.attention!r} is unknown; set it to one of "
                f"{', '.join(map(repr, SCORING_FUNCTIONS))}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.config.{name}={getattr(self, name)} must be in [0, 1)")

    def to_dict(self) -> dict:
        """Plain-dict form, as stored in checkpoints."""
        return asdict(self)
