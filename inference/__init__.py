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
out; attention heatmaps), ``options`` (the commands' engine options and numeric
checks; no torch).
"""

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "DecodingConfig", "DecodingError",
           "Hypothesis", "Translator", "load_translator", "read_checkpoint"]

#: public name -> its module, imported on first use (PEP 562): ``inference.options``
#: (the commands' argument helpers) loads without torch.
_HOMES = {"CHECKPOINT_FORMAT": "checkpoint", "CheckpointError": "checkpoint",
          "load_translator": "checkpoint", "read_checkpoint": "checkpoint",
          "DecodingConfig": "decoding", "DecodingError": "decoding", "Hypothesis": "decoding",
          "Translator": "translator"}


def __getattr__(name: str):
    """Import ``name`` from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
