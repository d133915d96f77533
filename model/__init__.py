"""Attention mechanisms, the Transformer and the RNN encoder–decoder, in plain PyTorch.

Names and signatures follow the attention chapter of d2l.ai.
"""

from .attention import (AdditiveAttention, DotProductAttention, MultiHeadAttention,
                        causal_valid_lens, masked_softmax, valid_mask)
from .build import build_model, config_from_dict
from .config import TransformerConfig
from .decoder import DecoderCache, TransformerDecoder, TransformerDecoderBlock
from .decoding import BeamSearchOutput, beam_search, greedy_decode, length_penalty
from .dropout import Dropout, dropout
from .encoder_decoder import EncoderDecoder
from .blocks import AddNorm, PositionWiseFFN
from .encoder import TransformerEncoder, TransformerEncoderBlock
from .nadaraya_watson import NWKernelRegression, leave_one_out, nadaraya_watson
from .pooling import AttentionPooling, TanhAttention, attention_pool
from .positional_encoding import PositionalEncoding
from .rnn import RNNConfig, RNNEncoderDecoder
from .transformer import Transformer

__all__ = [
    "masked_softmax", "valid_mask", "causal_valid_lens", "DotProductAttention",
    "AdditiveAttention", "MultiHeadAttention", "PositionalEncoding", "PositionWiseFFN",
    "AddNorm", "TransformerEncoderBlock", "TransformerEncoder", "TransformerDecoderBlock",
    "TransformerDecoder", "DecoderCache", "TransformerConfig", "Transformer", "greedy_decode",
    "RNNConfig", "RNNEncoderDecoder", "build_model", "config_from_dict", "EncoderDecoder",
    "beam_search", "BeamSearchOutput", "length_penalty", "nadaraya_watson",
    "NWKernelRegression", "leave_one_out", "attention_pool", "AttentionPooling", "TanhAttention",
    "Dropout", "dropout",
]
