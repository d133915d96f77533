"""The encoder–decoder Transformer, built from this package's modules."""

from __future__ import annotations

from torch import nn

from .config import TransformerConfig
from .decoder import DecoderCache, TransformerDecoder
from .encoder_decoder import EncoderDecoder
from .encoder import TransformerEncoder

__all__ = ["Transformer"]


class Transformer(EncoderDecoder):
    """Encoder–decoder Transformer for sequence-to-sequence translation.

    ``encode``/``decode``/``forward`` come from :class:`EncoderDecoder`;
    decoding is incremental with a :class:`~model.decoder.DecoderCache`.
    Plain PyTorch: loss, optimizer and metrics live in the training code.

    Args:
        config: every size and choice; see :class:`TransformerConfig`.

    Shapes:
        ``src`` ``(B, S)`` token ids, ``src_valid_len`` ``(B,)``,
        ``tgt_in`` ``(B, T)`` decoder input (BOS + target) -> logits
        ``(B, T, V)``.

    Source: Vaswani et al. 2017; d2l.ai §11.7 (``Transformer`` +
    ``EncoderDecoder``).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.encoder = TransformerEncoder(config, self.src_embedding)
        self.decoder = TransformerDecoder(config, self.tgt_embedding, self.output_layer())
        self.reset_parameters()
        self.keep_attention_weights(False)

    def reset_parameters(self) -> None:
        """Xavier-uniform linear layers, ``N(0, D^-1/2)`` embeddings (fairseq's init)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.reset_embeddings()

    def init_cache(self) -> DecoderCache:
        """An empty key/value cache for incremental decoding."""
        return DecoderCache(len(self.decoder.blks))
