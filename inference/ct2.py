"""Fast inference: export a checkpoint to CTranslate2 and translate with it.

CTranslate2 (Klein et al. 2020, OpenNMT) is the inference engine that the
converters of fairseq, OpenNMT-py and Marian target. Our Transformer maps onto
its stock :class:`ctranslate2.specs.TransformerSpec` with no custom code in
the engine:

==========================================  ==========================================
ours                                        CTranslate2 spec
==========================================  ==========================================
``src_embedding`` (tied to target/output)   ``encoder.embeddings[0]``,
                                            ``decoder.embeddings``,
                                            ``decoder.projection`` (one array, aliased)
``embedding * sqrt(D)``                     ``scale_embeddings=True``
``PositionalEncoding.P[0]`` ``(max_len, D)`` ``position_encodings.encodings`` (our own
                                            table: CTranslate2's built-in sinusoids
                                            have another layout)
``AddNorm.ln`` before each sub-layer        ``self_attention.layer_norm``,
(pre-LN), ``final_ln``                      ``attention.layer_norm``,
                                            ``ffn.layer_norm``, ``layer_norm``
``W_q``, ``W_k``, ``W_v`` (self-attention)  ``linear[0]`` (fused ``[W_q; W_k; W_v]``)
``W_q`` / ``W_k``, ``W_v`` (cross)          ``linear[0]`` / ``linear[1]`` (fused)
``W_o``                                     ``linear[2]``
``ffn.dense1``, ``ffn.dense2`` (ReLU)       ``ffn.linear_0``, ``ffn.linear_1``
``nn.LayerNorm`` eps 1e-5                   ``layer_norm_epsilon=1e-5``
source ids + ``</s>``; decoder starts       ``add_source_eos=True``,
at ``<s>``                                  ``decoder_start_token="<s>"``
==========================================  ==========================================

Only dot-product attention exists in CTranslate2, so a Transformer with
additive attention, and the GRU baseline, are refused.

Decoding differences, and what :class:`CTranslate2Translator` does about them:

* **Length penalty.** CTranslate2 ranks finished hypotheses by
  ``log P / length ** alpha``; our beam search by GNMT's
  ``log P / ((5 + length) / 6) ** alpha`` (:func:`model.decoding.length_penalty`).
  With ``lenpen_style="gnmt"`` (the default) CTranslate2 runs with its
  penalty off (``length_penalty=0``: raw log-probabilities), returns all
  ``beam_size`` finished hypotheses, and they are re-ranked here with the
  GNMT formula (``length`` counts EOS, as ours); with
  ``lenpen_style="ctranslate2"`` its own penalty is used with the same alpha.
* **Length limit.** Ours is per sentence (``a * S + b``, EOS included);
  CTranslate2 has one ``max_decoding_length`` per call. Every call gets the
  largest limit of its sentences and each output is cut to its own limit
  (for greedy decoding that is exactly ours; a beam that would have been
  closed earlier by our limit can differ).
* PAD and BOS are never produced (``suppress_sequences``), as in ours.

Source: CTranslate2 documentation, "Transformer" specification and "Add a
new converter"; fairseq's converter (``ctranslate2/converters/fairseq.py``)
for the layer mapping.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.files import json_damage, read_json
from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from model.decoding import length_limits, length_penalty

from .decoding import DecodingConfig, Hypothesis
from .options import LENPEN_STYLES, QUANTIZATIONS
from .translator import CheckpointError, Translator

__all__ = ["CTranslate2Error", "QUANTIZATIONS", "LENPEN_STYLES", "SETTINGS_FILE",
           "TOKENIZER_FILE", "is_ctranslate2_model", "transformer_spec", "encoder_spec",
           "export_ctranslate2", "CTranslate2Translator", "load_ctranslate2"]

#: The project's settings beside ``model.bin`` (decoding defaults, data settings).
SETTINGS_FILE = "translation_settings.json"
#: The SentencePiece model beside ``model.bin``.
TOKENIZER_FILE = "sentencepiece.model"


class CTranslate2Error(CheckpointError):
    """A model that cannot be exported to, or loaded from, CTranslate2; the
    message names the file or option and the fix."""


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError as err:  # pragma: no cover - installed by scripts/setup.sh
        raise CTranslate2Error("the ctranslate2 package is not installed; run "
                               "bash scripts/setup.sh (or pip install 'ctranslate2>=4')") from err
    return ctranslate2


def is_ctranslate2_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a CTranslate2 model (``model.bin``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.bin"))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _set_linear(spec, linear: torch.nn.Linear) -> None:
    spec.weight = _array(linear.weight)
    if linear.bias is not None:
        spec.bias = _array(linear.bias)


def _set_fused(spec, linears: list[torch.nn.Linear]) -> None:
    """Stack linear layers row-wise into one ``LinearSpec`` (``[W_q; W_k; W_v]``)."""
    spec.weight = np.concatenate([_array(lin.weight) for lin in linears])
    if any(lin.bias is not None for lin in linears):
        spec.bias = np.concatenate([
            _array(lin.bias) if lin.bias is not None else np.zeros(lin.out_features, np.float32)
            for lin in linears])


def _set_layer_norm(spec, ln: torch.nn.LayerNorm) -> None:
    spec.gamma = _array(ln.weight)
    spec.beta = _array(ln.bias)


def _check_exportable(model: torch.nn.Module, where: str) -> None:
    config = getattr(model, "config", None)
    arch = getattr(config, "arch", None)
    if arch != "transformer":
        raise CTranslate2Error(
            f"{where}: a model with arch={arch!r} cannot be exported to CTranslate2, which "
            f"runs Transformers only; export a Transformer checkpoint (the GRU baseline "
            f"decodes with scripts/translate.py --ckpt)")
    if config.attention != "dot":
        raise CTranslate2Error(
            f"{where}: model.config.attention={config.attention!r}: CTranslate2 runs "
            f"dot-product attention only; export a checkpoint trained with attention: dot, or "
            f"translate this one with scripts/translate.py --ckpt")


def _set_self_attention(spec, attention, ln: torch.nn.LayerNorm) -> None:
    """``MultiHeadAttention`` + its ``AddNorm`` LayerNorm -> fused QKV, output, norm."""
    _set_fused(spec.linear[0], [attention.W_q, attention.W_k, attention.W_v])
    _set_linear(spec.linear[1], attention.W_o)
    _set_layer_norm(spec.layer_norm, ln)


def _set_ffn(spec, ffn, ln: torch.nn.LayerNorm) -> None:
    """``PositionWiseFFN`` + its ``AddNorm`` LayerNorm -> ``FeedForwardSpec``."""
    _set_linear(spec.linear_0, ffn.dense1)
    _set_linear(spec.linear_1, ffn.dense2)
    _set_layer_norm(spec.layer_norm, ln)


def _fill_encoder(spec, model) -> None:
    """Our ``TransformerEncoder`` -> a ``TransformerEncoderSpec`` (pre- or post-LN)."""
    enc = model.encoder
    spec.embeddings[0].weight = _array(enc.embedding.weight)
    spec.scale_embeddings = True
    spec.position_encodings.encodings = _array(enc.pos_encoding.P[0])  # (max_len, D)
    for layer, blk in zip(spec.layer, enc.blks):
        _set_self_attention(layer.self_attention, blk.attention, blk.addnorm1.ln)
        _set_ffn(layer.ffn, blk.ffn, blk.addnorm2.ln)
    if model.config.norm_first:
        _set_layer_norm(spec.layer_norm, enc.final_ln)


def _fill_decoder(spec, model) -> None:
    """Our ``TransformerDecoder`` -> a ``TransformerDecoderSpec``."""
    dec = model.decoder
    spec.embeddings.weight = _array(dec.embedding.weight)
    spec.scale_embeddings = True
    spec.position_encodings.encodings = _array(dec.pos_encoding.P[0])  # (max_len, D)
    for layer, blk in zip(spec.layer, dec.blks):
        _set_self_attention(layer.self_attention, blk.attention1, blk.addnorm1.ln)
        cross = blk.attention2
        _set_linear(layer.attention.linear[0], cross.W_q)
        _set_fused(layer.attention.linear[1], [cross.W_k, cross.W_v])
        _set_linear(layer.attention.linear[2], cross.W_o)
        _set_layer_norm(layer.attention.layer_norm, blk.addnorm2.ln)
        _set_ffn(layer.ffn, blk.ffn, blk.addnorm3.ln)
    if model.config.norm_first:
        _set_layer_norm(spec.layer_norm, dec.final_ln)
    if dec.output is None:  # tied: the embedding matrix is the output projection
        spec.projection.weight = _array(dec.embedding.weight)
    else:
        _set_linear(spec.projection, dec.output)


def _vocabulary(tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]


def transformer_spec(model: torch.nn.Module, tokenizer: Tokenizer, where: str = "model"):
    """The CTranslate2 ``TransformerSpec`` of our :class:`model.Transformer`.

    Args:
        model: a Transformer with dot-product attention (eval mode is not needed:
            only weights are read).
        tokenizer: its SentencePiece model; the pieces in id order are the
            shared source/target vocabulary.
        where: how messages name the model (e.g. the checkpoint path).

    Returns:
        A validated-to-be ``ctranslate2.specs.TransformerSpec`` with weights,
        vocabulary and special tokens set (``<s>``, ``</s>``, ``<unk>``).

    Raises:
        CTranslate2Error: for the GRU baseline or additive attention.
    """
    _check_exportable(model, where)
    ct2 = _ctranslate2()
    specs = ct2.specs
    c = model.config
    spec = specs.TransformerSpec(
        specs.TransformerEncoderSpec(c.num_enc_blks, c.num_heads, pre_norm=c.norm_first),
        specs.TransformerDecoderSpec(c.num_dec_blks, c.num_heads, pre_norm=c.norm_first))
    _fill_encoder(spec.encoder, model)
    _fill_decoder(spec.decoder, model)
    vocabulary = _vocabulary(tokenizer)
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    spec.config.unk_token = tokenizer.sp.id_to_piece(tokenizer.unk_id)
    spec.config.bos_token = tokenizer.sp.id_to_piece(BOS_ID)
    spec.config.eos_token = tokenizer.sp.id_to_piece(EOS_ID)
    spec.config.decoder_start_token = tokenizer.sp.id_to_piece(BOS_ID)
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = float(model.encoder.blks[0].addnorm1.ln.eps)
    return spec


def encoder_spec(model: torch.nn.Module, tokenizer: Tokenizer):
    """Our encoder alone as a ``TransformerEncoderModelSpec`` (for checking the
    encoder's conversion against ours with ``ctranslate2.Encoder``)."""
    _check_exportable(model, "model")
    specs = _ctranslate2().specs
    c = model.config
    spec = specs.TransformerEncoderModelSpec(
        specs.TransformerEncoderSpec(c.num_enc_blks, c.num_heads, pre_norm=c.norm_first))
    _fill_encoder(spec.encoder, model)
    spec.register_vocabulary(_vocabulary(tokenizer))
    spec.config.unk_token = tokenizer.sp.id_to_piece(tokenizer.unk_id)
    spec.config.layer_norm_epsilon = float(model.encoder.blks[0].addnorm1.ln.eps)
    return spec


def _prepare_output_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CTranslate2Error(f"--out {out} is a file; pass a directory for the model")
    if out.is_dir() and any(out.iterdir()):
        if not is_ctranslate2_model(out):
            raise CTranslate2Error(
                f"--out {out} is a non-empty directory that holds no CTranslate2 model; "
                f"pass a new or empty directory (nothing there was touched)")
        if not force:
            raise CTranslate2Error(f"--out {out} already holds a CTranslate2 model; pass "
                                   f"--force to replace it, or another directory")


def export_ctranslate2(translator: Translator, out_dir: str | os.PathLike,
                       quantization: str = "float32", force: bool = False,
                       where: str = "checkpoint") -> Path:
    """Write ``translator``'s Transformer as a CTranslate2 model directory.

    ``out_dir`` gets ``model.bin`` (weights in ``quantization``),
    ``shared_vocabulary.json`` (our pieces in id order), ``config.json``,
    ``sentencepiece.model`` (a copy of the checkpoint's tokenizer) and
    ``translation_settings.json`` (the checkpoint's decoding defaults and data
    settings), so the directory alone is enough to translate. The model is
    first written to a temporary directory beside ``out_dir`` and then moved
    into place, so a failure leaves what was there untouched.

    Args:
        translator: from :func:`inference.checkpoint.load_translator`.
        out_dir: the model directory (created; must be new, empty, or an
            earlier export with ``force``).
        quantization: one of :data:`QUANTIZATIONS`.
        force: replace an earlier CTranslate2 export in ``out_dir``.
        where: how messages name the source (the checkpoint path).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        CTranslate2Error: for a model CTranslate2 cannot run, an unknown
            quantization, or an output directory that is not free.
    """
    if quantization not in QUANTIZATIONS:
        raise CTranslate2Error(f"--quantization {quantization} is unknown; use one of "
                               f"{', '.join(QUANTIZATIONS)}")
    out = Path(out_dir)
    _prepare_output_dir(out, force)
    spec = transformer_spec(translator.model, translator.tokenizer, where)
    settings = {"hparams": _jsonable(translator.hparams),
                "data_hparams": _jsonable(translator.data_hparams),
                "max_len": int(translator.model.config.max_len),
                "exported_from": str(where), "quantization": quantization}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        translator.tokenizer.save(str(files / TOKENIZER_FILE))
        (files / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        spec.register_file(str(files / TOKENIZER_FILE))
        spec.register_file(str(files / SETTINGS_FILE))
        spec.validate()
        spec.optimize(quantization=quantization)
        staged = Path(tmp) / "model"
        staged.mkdir()
        spec.save(str(staged))
        write_checksums(staged)
        if out.exists():
            shutil.rmtree(out)  # empty, or an earlier export with force (checked above)
        shutil.move(str(staged), str(out))
    return out


CHECKSUMS_FILE = "checksums.json"
"""Byte size and SHA-256 of every file of an export, written last (CTranslate2's
``model.bin`` has no checksum of its own, so changed bytes would load silently)."""


def write_checksums(folder: str | os.PathLike) -> None:
    """Write ``checksums.json`` for every file in ``folder``."""
    folder = Path(folder)
    sums = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != CHECKSUMS_FILE}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=1) + "\n")


def checksum_damage(folder: str | os.PathLike) -> str | None:
    """The first file of an export whose size or SHA-256 differs from ``checksums.json``
    (as ``"<file> is damaged: …"``); None if all match, or for an export made before
    checksums were written."""
    folder = Path(folder)
    if not (folder / CHECKSUMS_FILE).is_file():
        return None
    damage = json_damage(folder / CHECKSUMS_FILE)
    if damage is not None:
        return f"{folder / CHECKSUMS_FILE} is damaged: {damage}"
    for name, expected in json.loads((folder / CHECKSUMS_FILE).read_text()).items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return (f"{path} is damaged: {path.stat().st_size} bytes, {expected['bytes']} when "
                    f"exported (cut short or overwritten)")
        if _sha256(path) != expected["sha256"]:
            return (f"{path} is damaged: bytes changed since the export (its SHA-256 differs "
                    f"from {CHECKSUMS_FILE})")
    return None


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


def _reexport_fix(path: Path, exported_from: str | None) -> str:
    source = exported_from or "RUN.ckpt"
    return (f"export it again: python scripts/export_ctranslate2.py --ckpt {source} "
            f"--out {path} --force")


def _jsonable(values: dict) -> dict:
    """Hyperparameters as plain JSON (tuples -> lists, objects -> strings)."""
    return json.loads(json.dumps(values, default=str))


@dataclass
class CTranslate2Translator(Translator):
    """A CTranslate2 model directory, used like a checkpoint's :class:`Translator`.

    ``model`` is None; ``engine`` is the ``ctranslate2.Translator``. The
    checkpoint's decoding defaults and data settings come from
    ``translation_settings.json``, so :meth:`decoding` and :meth:`load_split`
    work as for a checkpoint.

    Attributes:
        engine: the loaded ``ctranslate2.Translator``.
        path: the model directory.
        lenpen_style: ``"gnmt"`` (re-rank CTranslate2's n-best with our GNMT
            penalty) or ``"ctranslate2"`` (its ``length ** alpha``).
    """

    engine: Any = None
    path: str = ""
    lenpen_style: str = "gnmt"
    settings: dict = field(default_factory=dict)

    @property
    def max_len(self) -> int:
        """Longest source in tokens (EOS included), as the model's ``max_len``."""
        return int(self.settings["max_len"])

    @property
    def engine_name(self) -> str:
        """``"ctranslate2 <compute type>"`` for reports."""
        return f"ctranslate2 {self.engine.compute_type}"

    def translate_ids(self, ids: list[list[int]], decoding: DecodingConfig,
                      device: str | torch.device = "cpu", max_tokens: int = 8192
                      ) -> list[list[Hypothesis]]:
        """Translate N sources given as piece ids (no EOS).

        Sources longer than ``max_len - 1`` pieces are truncated as
        :func:`data.batching.encode_sources` does. Returns, per source, its
        ``decoding.nbest`` hypotheses, best first; ``score`` is the
        length-normalized log-probability (None for greedy decoding), ``ids``
        end with EOS.
        """
        if not ids:
            return []
        sp, limit = self.tokenizer.sp, self.max_len
        sources = [[sp.id_to_piece(i) for i in seq[: limit - 1]] for seq in ids]
        src_lens = torch.tensor([len(seq) + 1 for seq in sources])  # EOS included
        max_lens = length_limits(src_lens, decoding.max_len_a, decoding.max_len_b, limit)
        beam = decoding.beam_size
        gnmt = beam > 1 and self.lenpen_style == "gnmt"
        results = self.engine.translate_batch(
            sources, max_batch_size=max_tokens, batch_type="tokens", beam_size=beam,
            num_hypotheses=beam if gnmt else decoding.nbest,
            length_penalty=0.0 if gnmt else decoding.alpha,
            max_decoding_length=int(max_lens.max().item()), min_decoding_length=0,  # EOS first: as ours
            return_scores=beam > 1,
            suppress_sequences=[[sp.id_to_piece(PAD_ID)], [sp.id_to_piece(BOS_ID)]],
            max_input_length=0)
        out = []
        for result, cap in zip(results, max_lens.tolist()):
            hyps = []
            for tokens, score in zip(result.hypotheses, result.scores or
                                     [None] * len(result.hypotheses)):
                seq = [sp.piece_to_id(t) for t in tokens][: cap - 1] + [EOS_ID]
                if gnmt:
                    score = score / length_penalty(float(len(seq)), decoding.alpha,
                                                   decoding.lenpen_norm)
                hyps.append((seq, score))
            if gnmt:
                hyps.sort(key=lambda h: -h[1])
            hyps = hyps[: decoding.nbest]
            texts = self.tokenizer.decode([seq for seq, _ in hyps])
            out.append([Hypothesis(text, score if beam > 1 else None, seq)
                        for text, (seq, score) in zip(texts, hyps)])
        return out


def load_ctranslate2(path: str | os.PathLike, device: str | torch.device = "cpu",
                     compute_type: str = "default", threads: int | None = None,
                     lenpen_style: str = "gnmt") -> CTranslate2Translator:
    """Load a directory written by :func:`export_ctranslate2`.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        compute_type: CTranslate2's ``compute_type`` (``"default"``: the
            exported weight type; ``"int8"`` quantizes a float32 export on load).
        threads: CPU threads of the one translator (``intra_threads``;
            None: ``torch.get_num_threads()``).
        lenpen_style: see :data:`LENPEN_STYLES`.

    Raises:
        CTranslate2Error: if the directory is no export of this project, or
            an option is not one CTranslate2 accepts.
    """
    ct2 = _ctranslate2()
    path = Path(path)
    for name in ("model.bin", TOKENIZER_FILE, SETTINGS_FILE):
        if not (path / name).is_file():
            raise CTranslate2Error(
                f"{path} has no {name}: it is not a CTranslate2 model written by "
                f"scripts/export_ctranslate2.py; export one with scripts/export_ctranslate2.py "
                f"--ckpt RUN.ckpt --out {path}")
    if lenpen_style not in LENPEN_STYLES:
        raise CTranslate2Error(f"--lenpen-style {lenpen_style} is unknown; use one of "
                               f"{', '.join(LENPEN_STYLES)}")
    settings = read_json(path / SETTINGS_FILE, CTranslate2Error, _reexport_fix(path, None))
    fix = _reexport_fix(path, settings.get("exported_from") if isinstance(settings, dict) else None)
    for name in ("config.json", "shared_vocabulary.json"):
        if (path / name).is_file():
            read_json(path / name, CTranslate2Error, fix)
    damage = checksum_damage(path)
    if damage is not None:
        raise CTranslate2Error(f"{damage}; {fix}")
    device = str(device)
    kind, _, index = device.partition(":")
    try:
        engine = ct2.Translator(str(path), device=kind, device_index=int(index or 0),
                                compute_type=compute_type,
                                intra_threads=threads or torch.get_num_threads())
    except ValueError as err:
        raise CTranslate2Error(f"{path}: CTranslate2 cannot load it with device={device}, "
                               f"compute_type={compute_type} ({err}); use --compute-type "
                               f"default, int8 or float32") from err
    except RuntimeError as err:  # CTranslate2 checks model.bin against its own header
        raise CTranslate2Error(f"{path / 'model.bin'} is damaged: "
                               f"{' '.join(str(err).split())[:300]}; {fix}") from err
    try:
        tokenizer = Tokenizer.load(str(path / TOKENIZER_FILE))
    except ValueError as err:
        raise CTranslate2Error(f"{err}; {fix}") from err
    return CTranslate2Translator(None, tokenizer, settings["hparams"], settings["data_hparams"],
                                 engine=engine, path=str(path), lenpen_style=lenpen_style,
                                 settings=settings)
