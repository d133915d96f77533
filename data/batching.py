"""Stage 3: length-bucketed batches under a token budget, padded, with valid lengths.

A batch is a dict of tensors:

=================  =========  ==================================================
key                shape      content
=================  =========  ==================================================
``src``            (B, S)     source ids + EOS, padded with PAD
``src_valid_len``  (B,)       number of real source tokens (EOS included)
``tgt_in``         (B, T)     decoder input: BOS + target ids, padded
``labels``         (B, T)     target ids + EOS (``tgt_in`` shifted by one), padded
``tgt_valid_len``  (B,)       number of real target tokens (EOS included)
``index``          (B,)       position of each pair in its split (for ordering outputs)
=================  =========  ==================================================
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .tokenizer import BOS_ID, EOS_ID, PAD_ID

__all__ = ["ParallelDataset", "ResumableDataLoader", "TokenBudgetBatchSampler", "collate_batch",
           "encode_sources"]


class ParallelDataset(Dataset):
    """Token-id pairs of one split; item ``i`` is ``(i, src_ids, tgt_ids)``.

    Args:
        src: source id sequences, each already ending with EOS: a list of
            arrays, or the memory-mapped :class:`data.cache.PackedSequences`
            of the token cache (indexed in place, lengths read from its offsets).
        tgt: target id sequences (no BOS/EOS; added by :func:`collate_batch`),
            or None for source-only data (translation).

    Raises:
        ValueError: if ``src`` and ``tgt`` differ in length.
    """

    def __init__(self, src: Sequence[np.ndarray], tgt: Sequence[np.ndarray] | None = None):
        if tgt is not None and len(src) != len(tgt):
            raise ValueError(f"{len(src)} source sequences but {len(tgt)} target sequences")
        self.src, self.tgt = src, tgt

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int):
        return i, self.src[i], (self.tgt[i] if self.tgt is not None else None)

    def src_lens(self) -> np.ndarray:
        """``(N,)`` source lengths (EOS included)."""
        return _lengths(self.src)

    def tgt_lens(self) -> np.ndarray:
        """``(N,)`` target lengths as batched (target + EOS); zeros without targets."""
        if self.tgt is None:
            return np.zeros(len(self.src), dtype=np.int64)
        return _lengths(self.tgt) + 1


def _lengths(seqs: Sequence[np.ndarray]) -> np.ndarray:
    """``(N,)`` int64 lengths: from packed offsets in one vectorized step, else one by one."""
    if hasattr(seqs, "lengths"):
        return np.asarray(seqs.lengths(), dtype=np.int64)
    return np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of similar length whose padded size stays within a token budget.

    Pairs are sorted by length (ties broken at random each epoch when
    shuffling), cut into batches whose ``B * max(S, T)`` is at most
    ``max_tokens``, and the batch order is shuffled per epoch. The same seed
    and epoch give the same batches. With ``num_replicas > 1`` (data
    parallel) each rank takes every ``num_replicas``-th batch, the batch
    count padded to a multiple of ``num_replicas`` by repeating batches.

    Args:
        src_lens, tgt_lens: ``(N,)`` lengths as batched.
        max_tokens: token budget per batch (padded tokens counted).
        shuffle: reshuffle ties and batch order each epoch (training).
        seed: base seed; epoch ``e`` uses ``seed + e``.
        num_replicas, rank: data-parallel world size and this process's rank.

    Raises:
        ValueError: if ``max_tokens`` is smaller than the longest pair.

    Source: fairseq's ``batch_by_size`` (Ott et al. 2019); JoeyNMT's token batches.
    """

    def __init__(self, src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int,
                 shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        self.lens = np.maximum(np.asarray(src_lens), np.asarray(tgt_lens))
        if len(self.lens) and self.lens.max() > max_tokens:
            raise ValueError(
                f"max_tokens={max_tokens} is smaller than the longest pair "
                f"({int(self.lens.max())} tokens); raise data.max_tokens or lower data.max_len")
        self.max_tokens, self.shuffle, self.seed = max_tokens, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        #: Batches of the epoch to leave out at the start of the next iteration
        #: (set by :class:`ResumableDataLoader` when resuming mid-epoch).
        self.skip = 0
        self._cached: tuple[int, list[np.ndarray]] | None = None  # (epoch, its batches)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        """This rank's batches of the current epoch (made once per epoch, then reused)."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lens)) if self.shuffle else np.arange(len(self.lens))
        order = order[np.argsort(self.lens[order], kind="stable")]
        batches = _cut(order, self.lens[order], self.max_tokens)
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        if self.num_replicas > 1:
            total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
            batches = (batches + batches[: total - len(batches)])[self.rank::self.num_replicas]
        self._cached = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return (batch.tolist() for batch in self._batches()[self.skip:])

    def __len__(self) -> int:
        """Batches in a whole epoch (also while resuming with ``skip`` set)."""
        return len(self._batches())


def _cut(order: np.ndarray, lens: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut pairs sorted by length into consecutive batches with ``B * longest <= max_tokens``.

    Greedy, as fairseq's ``batch_by_size``: a batch grows while adding the next
    pair keeps it within the budget. The lengths are sorted, so the longest
    pair of a batch is its last one and a batch starting at ``s`` is the
    longest run with ``lens[j] * (j - s + 1) <= max_tokens``; each batch is
    found with one vectorized comparison over at most ``max_tokens //
    lens[s]`` candidates, so an epoch costs O(N) in NumPy and a Python step
    per batch, not per pair.
    """
    batches, start, n = [], 0, len(order)
    while start < n:
        room = max(1, max_tokens // int(lens[start]))
        window = lens[start: start + room]
        fits = window * np.arange(1, len(window) + 1) <= max_tokens  # non-increasing: a prefix
        size = max(1, int(fits.sum()))
        batches.append(order[start: start + size])
        start += size
    return batches


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`TokenBudgetBatchSampler` whose position
    within the epoch is saved in checkpoints, so a resumed run continues with
    the next batch instead of restarting the epoch.

    Lightning stores ``state_dict()`` of a training loader that has one (its
    ``_Stateful`` protocol) in every checkpoint and calls ``load_state_dict()``
    before iterating again on resume. The state is ``{"epoch", "batches"}``:
    the sampler's epoch and how many of its batches the training loop has
    consumed. ``consumed`` tells that count; batches prefetched by the loop or
    by worker processes but not yet trained on are not consumed (Lightning's
    loop fetches one batch ahead, so counting the batches this loader yielded
    would skip one on resume). Without ``consumed`` the yielded count is used.

    The loader draws its workers' base seed from its own generator (seeded
    from ``seed``), never from the global torch generator, so creating an
    iterator on resume does not shift the random stream of dropout.

    Args:
        dataset: the :class:`ParallelDataset`.
        batch_sampler: its :class:`TokenBudgetBatchSampler`.
        consumed: callable returning the batches of the current epoch trained
            on so far (the data module passes Lightning's batch progress).
        seed: seed of the loader's own generator.
        **kwargs: passed to ``DataLoader`` (``collate_fn``, ``num_workers`` ...).

    Source: Lightning's resumable-dataloader interface
    (``lightning.pytorch.loops.training_epoch_loop``); torchdata's
    ``StatefulDataLoader`` keeps the same kind of state.
    """

    def __init__(self, dataset: Dataset, batch_sampler: TokenBudgetBatchSampler,
                 consumed: Callable[[], int] | None = None, seed: int = 0, **kwargs: Any):
        generator = torch.Generator()
        generator.manual_seed(seed)
        super().__init__(dataset, batch_sampler=batch_sampler, generator=generator, **kwargs)
        self._consumed = consumed
        self._yielded = 0
        self._resume: dict[str, int] | None = None

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": sampler epoch, "batches": batches of it consumed}``."""
        batches = self._consumed() if self._consumed is not None else self._yielded
        return {"epoch": int(self.batch_sampler.epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Skip ``state["batches"]`` batches the next time the same epoch is iterated."""
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}

    def __iter__(self):
        sampler = self.batch_sampler
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume and resume["epoch"] == sampler.epoch else 0
        sampler.skip = skip
        try:
            iterator = super().__iter__()  # takes the sampler's batch list now
        finally:
            sampler.skip = 0
        self._yielded = skip
        return self._count(iterator)

    def _count(self, iterator):
        for batch in iterator:
            self._yielded += 1
            yield batch


def encode_sources(tokenizer, sentences: list[str], max_len: int,
                   ids: list[list[int]] | None = None) -> list[np.ndarray]:
    """Sentences -> source id arrays ending with EOS, truncated to ``max_len`` tokens.

    ``tokenizer``: a :class:`data.tokenizer.Tokenizer` (or anything with its ``encode``).

    ``ids``: ``tokenizer.encode(sentences)`` where the caller has it already
    (the sentences are then not encoded again).
    """
    ids = tokenizer.encode(sentences) if ids is None else ids
    return [np.asarray(seq[: max_len - 1] + [EOS_ID], dtype=np.int32) for seq in ids]


def _pad(seqs: list[np.ndarray], prefix: int | None = None, suffix: int | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id sequences (optionally adding a prefix/suffix id) -> ``(B, L)``, lengths ``(B,)``.

    Filled in NumPy, so read-only (memory-mapped) sequences are copied, never wrapped.
    """
    start = int(prefix is not None)
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    total = lens + start + (suffix is not None)
    out = np.full((len(seqs), int(total.max())), PAD_ID, dtype=np.int64)
    if prefix is not None:
        out[:, 0] = prefix
    for row, seq in enumerate(seqs):
        out[row, start: start + len(seq)] = seq
    if suffix is not None:
        out[np.arange(len(seqs)), start + lens] = suffix
    return torch.from_numpy(out), torch.from_numpy(total)


def collate_batch(items: list[tuple[int, np.ndarray, np.ndarray | None]]) -> dict[str, torch.Tensor]:
    """Pad a list of ``(index, src_ids, tgt_ids)`` into the batch dict described above."""
    index = torch.tensor([i for i, _, _ in items], dtype=torch.long)
    src, src_valid_len = _pad([s for _, s, _ in items])
    batch = {"src": src, "src_valid_len": src_valid_len, "index": index}
    if items[0][2] is not None:
        tgt = [t for _, _, t in items]
        batch["tgt_in"], _ = _pad(tgt, prefix=BOS_ID)
        batch["labels"], batch["tgt_valid_len"] = _pad(tgt, suffix=EOS_ID)
    return batch
