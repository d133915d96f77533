"""Build a network from its config: the one place that maps ``arch`` to code.

``TransformerConfig`` and ``RNNConfig`` each carry an ``arch`` field
(``"transformer"`` / ``"rnn"``, fixed by the class). A checkpoint stores
``asdict(config)``, so :func:`config_from_dict` rebuilds the right dataclass
from it (configs saved before ``arch`` existed are Transformers). In YAML the
Transformer is ``model.config`` and the RNN ``model.rnn`` (see
:class:`training.module.TranslationModule`).
"""

from __future__ import annotations

from typing import Union

from torch import nn

from .config import TransformerConfig
from .rnn import RNNConfig, RNNEncoderDecoder
from .transformer import Transformer

__all__ = ["ModelConfig", "MODEL_CONFIGS", "config_from_dict", "build_model"]

#: Any model config.
ModelConfig = Union[TransformerConfig, RNNConfig]

#: ``arch`` value -> (config dataclass, model class).
MODEL_CONFIGS: dict[str, tuple[type, type[nn.Module]]] = {
    "transformer": (TransformerConfig, Transformer),
    "rnn": (RNNConfig, RNNEncoderDecoder),
}


def config_from_dict(values: dict) -> TransformerConfig | RNNConfig:
    """The config dataclass named by ``values["arch"]`` (default ``"transformer"``).

    Raises:
        ValueError: if ``arch`` is unknown, or a key is not a field of that config.
    """
    arch = values.get("arch", "transformer")
    if arch not in MODEL_CONFIGS:
        raise ValueError(f"model config: arch={arch!r} is unknown; use one of "
                         f"{list(MODEL_CONFIGS)}")
    config_class = MODEL_CONFIGS[arch][0]
    try:
        return config_class(**values)
    except TypeError as err:
        raise ValueError(f"model config for arch={arch!r}: {err}; the fields are those of "
                         f"{config_class.__name__}") from err


def build_model(config: TransformerConfig | RNNConfig | dict) -> nn.Module:
    """The network for ``config`` (a config dataclass or its dict form).

    Returns:
        A :class:`~model.transformer.Transformer` or
        :class:`~model.rnn.RNNEncoderDecoder`; both have ``encode``,
        ``decode``, ``init_cache``, ``keep_attention_weights`` and
        ``num_parameters``.

    Raises:
        ValueError: if ``config`` is of no known architecture.
    """
    if isinstance(config, dict):
        config = config_from_dict(config)
    for config_class, model_class in MODEL_CONFIGS.values():
        if isinstance(config, config_class):
            return model_class(config)
    raise ValueError(f"build_model: {type(config).__name__} is not a model config; pass one of "
                     f"{[c.__name__ for c, _ in MODEL_CONFIGS.values()]}")
