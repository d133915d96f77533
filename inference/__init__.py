"""Inference: load a checkpoint or a CTranslate2 export and translate, without Lightning.

Layer: above :mod:`model` and :mod:`data` (never :mod:`data.datamodule`), below
:mod:`training`; imports no Lightning, so translating from Python or from
``scripts/translate.py`` needs only PyTorch, SentencePiece (and CTranslate2 for
an export):

    from inference import load_translator
    from inference.translation import translate_lines
    translator = load_translator("runs/multi30k_cpu/checkpoints/best.ckpt")
    hyps = translate_lines(translator, ["A man rides a bike."], translator.decoding(beam_size=5),
                           device="cpu")
    print(hyps[0][0].text)

Modules: ``checkpoint`` (read and check a checkpoint, ``load_translator``),
``translator`` (``Translator``: model + tokenizer + saved settings),
``decoding`` (``DecodingConfig``, batched greedy/beam decoding drivers),
``ct2`` (CTranslate2 export and engine), ``translation`` (raw lines in, lines
out; attention heatmaps), ``options`` (numeric option checks of the scripts).
"""

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_translator, read_checkpoint
from .decoding import DecodingConfig, DecodingError, Hypothesis
from .translator import Translator

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "DecodingConfig", "DecodingError",
           "Hypothesis", "Translator", "load_translator", "read_checkpoint"]
