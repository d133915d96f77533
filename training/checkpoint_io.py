"""Checkpoint files written atomically, so a crash while saving never destroys
the previous good checkpoint."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from data.files import checkpoint_damage
from inference.translator import CheckpointError

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, but every local file is written to a
    temporary file in the same folder, flushed to disk (``fsync``) and then
    renamed over the target (``os.replace``, atomic on POSIX and Windows).

    A process killed while saving (SIGKILL, out of memory, power loss after
    the rename is durable) therefore leaves either the complete old file or
    the complete new one at the checkpoint's path, never a truncated file;
    at worst a ``.<name>.tmp-*`` file remains beside it, which the next save
    of the same checkpoint removes. Remote paths (``s3://`` ...) fall back to
    Lightning's own writer.

    Use: ``trainer.plugins: [{class_path: training.checkpoint_io.AtomicCheckpointIO}]``
    (every shipped config has it).

    Raises:
        whatever ``torch.save`` or the file system raises; the old checkpoint
        is then untouched and the temporary file removed.

    Source: the write-then-rename pattern of fairseq's ``checkpoint_utils``
    (``torch_persistent_save``) and of POSIX ``rename(2)``.
    """

    def load_checkpoint(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Lightning's loader, after checking the file (a resume, ``validate``/``test``
        with ``ckpt_path``): a damaged one raises ``CheckpointError`` naming it and
        what is wrong (:func:`data.files.checkpoint_damage`), not the zip reader's error."""
        if Path(path).is_file():
            damage = checkpoint_damage(path)
            if damage is not None:
                raise CheckpointError(f"checkpoint {path} is damaged: {damage}; use another "
                                      f"checkpoint of the run (best.ckpt, last.ckpt)")
        return super().load_checkpoint(path, *args, **kwargs)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options "
                            f"(got {storage_options!r})")
        protocol = get_filesystem(path).protocol
        if "file" not in (protocol if isinstance(protocol, (tuple, list)) else (protocol,)):
            super().save_checkpoint(checkpoint, path)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink(missing_ok=True)  # left by a save that was killed
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            # mkstemp makes the file private (0600); give it the permissions a plain
            # open() would (0666 less the umask), as Lightning's own writer does.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
