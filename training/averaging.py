"""Checkpoint averaging: the elementwise mean of the weights of a run's last
checkpoints, saved as one self-contained checkpoint.

Averaging the last few checkpoints of a run smooths the noise of the final
updates (an inexpensive form of Polyak averaging) and usually gains a
fraction of a BLEU point over the last checkpoint alone.

    python scripts/average_checkpoints.py --run runs/multi30k_tiny --last 10
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from inference.checkpoint import CheckpointError, read_checkpoint

from .checkpoint_io import AtomicCheckpointIO

__all__ = ["average_checkpoints", "last_checkpoints", "save_checkpoint", "tied_keys"]

#: Entries of the newest input kept in the averaged checkpoint. Everything
#: else (``optimizer_states``, ``lr_schedulers``, ``loops``, ``callbacks``,
#: ``rng_states``, precision-plugin state) belongs to one point of one run and
#: would be wrong for the mean, so it is dropped.
KEPT_ENTRIES = ("format", "pytorch-lightning_version", "epoch", "global_step",
                "hparams_name", "hyper_parameters", "datamodule_hparams_name",
                "datamodule_hyper_parameters", "tokenizer_model")


def _read(path: Path) -> dict:
    """One checkpoint of this project, tensors on the CPU.

    Raises:
        CheckpointError: if ``path`` is missing, unreadable, not this
            project's format, or lacks weights, model config or tokenizer.
    """
    ckpt = read_checkpoint(path)
    for entry, what in (("state_dict", "weights"), ("tokenizer_model", "SentencePiece model")):
        if entry not in ckpt:
            raise CheckpointError(f"{path} holds no {what} ({entry!r}); use another checkpoint")
    if "config" not in ckpt.get("hyper_parameters", {}):
        raise CheckpointError(f"{path} holds no model config (hyper_parameters['config']); "
                              f"use another checkpoint")
    return ckpt


def tied_keys(state_dict: dict[str, torch.Tensor]) -> list[list[str]]:
    """Groups of keys under which one tensor is stored (tied weights).

    With ``tie_embeddings`` the Transformer's source embedding, target
    embedding and output projection are one ``nn.Parameter``; its state dict
    holds that tensor under every module that refers to it
    (``model.src_embedding.weight``, ``model.tgt_embedding.weight``,
    ``model.encoder.embedding.weight``, ``model.decoder.embedding.weight``),
    and ``torch.save``/``torch.load`` keep them one storage.

    Returns:
        The groups of two or more keys whose tensors are views of the same
        storage with the same offset, shape and strides, each group in state
        dict order; groups ordered by their first key.
    """
    groups: dict[tuple, list[str]] = {}
    for key, tensor in state_dict.items():
        if tensor.numel() == 0:
            continue  # empty tensors may all report storage address 0
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                 tuple(tensor.shape), tensor.stride(), tensor.dtype)
        groups.setdefault(where, []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def _config_difference(a: dict, b: dict) -> str:
    """``key=A-value vs B-value`` for every model config key that differs."""
    missing = "(absent)"
    return ", ".join(f"{key}={a.get(key, missing)!r} vs {b.get(key, missing)!r}"
                     for key in sorted(set(a) | set(b)) if a.get(key, missing) != b.get(key, missing))


def _check_same_model(ref_path: Path, ref: dict, ref_ties: list[list[str]],
                      path: Path, ckpt: dict, ties: list[list[str]]) -> None:
    """Raise CheckpointError unless ``ckpt`` is a checkpoint of the same model as ``ref``."""
    pair = f"{ref_path} and {path}"
    ref_config, config = ref["hyper_parameters"]["config"], ckpt["hyper_parameters"]["config"]
    if ref_config != config:
        raise CheckpointError(f"{pair} are checkpoints of different models: model config "
                              f"{_config_difference(ref_config, config)}; average checkpoints "
                              f"of one training run")
    if ref["tokenizer_model"] != ckpt["tokenizer_model"]:
        raise CheckpointError(f"{pair} hold different SentencePiece models (their token ids "
                              f"mean different pieces); average checkpoints of one training run")
    ref_state, state = ref["state_dict"], ckpt["state_dict"]
    if ref_state.keys() != state.keys():
        only_ref = sorted(ref_state.keys() - state.keys())
        only = sorted(state.keys() - ref_state.keys())
        raise CheckpointError(f"{pair} hold different weights: only in {ref_path}: "
                              f"{only_ref or 'none'}; only in {path}: {only or 'none'}")
    for key, tensor in state.items():
        ref_shape, ref_dtype = ref_state[key]
        if tuple(tensor.shape) != ref_shape or tensor.dtype != ref_dtype:
            raise CheckpointError(f"{pair} disagree on {key}: shape {list(ref_shape)} "
                                  f"{ref_dtype} vs {list(tensor.shape)} {tensor.dtype}")
    if sorted(ref_ties) != sorted(ties):
        raise CheckpointError(f"{pair} tie different weights: one tensor under each of "
                              f"{ref_ties} in the first, {ties} in the second")


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> dict:
    """The checkpoint whose weights are the elementwise mean of ``paths``' weights.

    Files are read one at a time (memory: the running float64 sum plus one
    checkpoint). Every floating-point tensor of ``state_dict`` is summed in
    float64, divided by ``len(paths)`` and cast back to its dtype; any other
    tensor (integer buffers) must be equal in all files and is taken from the
    last. Tied weights stay tied: keys that share one tensor in the inputs
    (:func:`tied_keys`) share one averaged tensor in the result, and the
    model that :func:`inference.checkpoint.load_translator` builds ties them
    again at construction.

    Args:
        paths: N >= 1 checkpoints of this project (``scripts/train.py``, full
            or ``save_weights_only``), oldest first; the last gives
            everything but the weights.

    Returns:
        A self-contained checkpoint dict (loadable with ``load_translator``):
        the last input's ``format``, ``hyper_parameters``,
        ``datamodule_hyper_parameters``, ``tokenizer_model``, ``epoch`` and
        ``global_step`` (:data:`KEPT_ENTRIES`), the averaged ``state_dict``,
        and ``averaged_from``, the N file names in order. No optimizer,
        scheduler, loop, callback or random-generator state.

    Raises:
        CheckpointError: if ``paths`` is empty or names one file twice, a file
            is missing or not this project's checkpoint, or two files are not
            checkpoints of the same model: the message names the two files
            and what differs (the model config keys and both values, the
            SentencePiece model, a weight's name, shape or dtype, the tied
            weights, or an unequal non-float tensor).

    Source: fairseq ``scripts/average_checkpoints.py`` (``average_checkpoints``);
    Vaswani et al. 2017 §6.1 ("averaging the last 5 checkpoints").
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise CheckpointError("no checkpoints to average; pass at least one .ckpt file")
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise CheckpointError(f"{path} is listed twice (as {seen[path.resolve()]} too); "
                                  f"each checkpoint may be averaged once")
        seen[path.resolve()] = path

    sums: dict[str, torch.Tensor] = {}  # float64 running sums, one per tied group
    ref_path, ref, ref_ties = paths[0], {}, []
    for i, path in enumerate(paths):
        ckpt = _read(path)
        state, ties = ckpt["state_dict"], tied_keys(ckpt["state_dict"])
        if i == 0:
            ref_ties = ties
            ref = {"hyper_parameters": ckpt["hyper_parameters"],
                   "tokenizer_model": ckpt["tokenizer_model"],
                   "state_dict": {k: (tuple(v.shape), v.dtype) for k, v in state.items()}}
            followers = {key for keys in ties for key in keys[1:]}
            exact = {k: v for k, v in state.items() if not v.is_floating_point()}
            sums = {k: v.to(torch.float64, copy=True) for k, v in state.items()
                    if v.is_floating_point() and k not in followers}
        else:
            _check_same_model(ref_path, ref, ref_ties, path, ckpt, ties)
            for key, value in exact.items():
                if not torch.equal(value, state[key]):
                    raise CheckpointError(f"{ref_path} and {path} differ in {key}, a "
                                          f"{value.dtype} tensor that cannot be averaged; "
                                          f"average checkpoints of one training run")
            for key, total in sums.items():
                total.add_(state[key].to(torch.float64))
        last = ckpt

    averaged = {key: (total / len(paths)).to(last["state_dict"][key].dtype)
                for key, total in sums.items()}
    for keys in ref_ties:
        for key in keys[1:]:
            averaged[key] = averaged[keys[0]]  # one tensor object: saved once, still tied
    state = {key: averaged.get(key, value) for key, value in last["state_dict"].items()}
    result = {entry: last[entry] for entry in KEPT_ENTRIES if entry in last}
    result.update(state_dict=state, averaged_from=[path.name for path in paths])
    return result


def _global_step(path: Path) -> int | None:
    """The saved ``global_step`` of ``path``, or None for an averaged checkpoint.

    Raises:
        CheckpointError: if the file is unreadable or has no ``global_step``.
    """
    ckpt = read_checkpoint(path, mmap=True)
    if "global_step" not in ckpt:
        raise CheckpointError(f"{path} holds no global_step, so it is no checkpoint written by "
                              f"scripts/train.py; move it out of {path.parent}")
    return None if "averaged_from" in ckpt else int(ckpt["global_step"])


def last_checkpoints(folder: str | os.PathLike, n: int) -> list[Path]:
    """The ``n`` newest ``*.ckpt`` files of ``folder``, oldest first.

    "Newest" is by the ``global_step`` saved in each file (ties broken by
    file name), not by file time or name: a resumed or copied run keeps the
    order of training. Averaged checkpoints (with ``averaged_from``) are
    skipped.

    Args:
        folder: e.g. ``runs/multi30k_tiny/checkpoints/epochs``, where the epoch
            ``ModelCheckpoint`` of ``configs/multi30k_tiny.yaml`` writes.
        n: how many to return, at least 1.

    Returns:
        ``n`` paths, ordered by increasing ``global_step``.

    Raises:
        CheckpointError: if ``n < 1``, ``folder`` is no folder, a file in it
            is unreadable or has no ``global_step``, or ``folder`` holds fewer
            than ``n`` checkpoints (the message says how many it has).
    """
    folder = Path(folder)
    if n < 1:
        raise CheckpointError(f"asked for the last {n} checkpoints of {folder}; ask for at least 1")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the folder the epoch checkpoints "
                              f"are written to (a run's checkpoints/epochs/)")
    steps = {path: _global_step(path) for path in folder.glob("*.ckpt")}
    found = sorted((step, path.name, path) for path, step in steps.items() if step is not None)
    if len(found) < n:
        if not found:
            raise CheckpointError(f"{folder} holds no training checkpoints (*.ckpt); train with "
                                  f"a config that writes epoch checkpoints there "
                                  f"(configs/multi30k_tiny.yaml)")
        raise CheckpointError(f"{folder} holds {len(found)} checkpoints, fewer than the {n} "
                              f"asked for; average those with --last {len(found)}")
    return [path for _, _, path in found[-n:]]


def save_checkpoint(ckpt: dict, path: str | os.PathLike,
                    inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary file in the same folder,
    ``fsync``, ``os.replace``: see :class:`training.checkpoint_io.AtomicCheckpointIO`),
    so a crash never leaves a truncated file.

    Args:
        ckpt: e.g. what :func:`average_checkpoints` returns.
        path: the file to write; its folder is created if needed.
        inputs: the files ``ckpt`` was made from; none may be ``path``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        CheckpointError: if ``path`` is one of ``inputs`` (nothing is written)
            or is a folder.
    """
    path = Path(path)
    for source in map(Path, inputs):
        if path.resolve() == source.resolve():
            raise CheckpointError(f"refusing to overwrite {source}, one of the averaged "
                                  f"checkpoints; write the average to another file (--out)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a file name such as "
                              f"{path / 'averaged.ckpt'}")
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    return path
