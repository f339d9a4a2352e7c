"""The order of training items: a function of ``(seed, epoch)``, resumable part-way through an epoch.

A RandomSampler draws its permutation from the torch global RNG, so a resumed run cannot get the order
of the interrupted epoch back (and the draw itself shifts the dropout randomness). ``EpochSampler``
draws it from its own generator seeded by ``(seed, epoch)``, splits it between processes the way
DistributedSampler does, and can start an epoch after its first ``k`` batches (what a run resumed from
a mid-epoch checkpoint has already trained on).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def _world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group (``(0, 1)`` without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``n`` items in ``epoch``: the same for the same ``(seed, epoch)``, whatever else ran.

    The seed sequence differs in shape from the items' ``(seed, epoch, i)`` (PairDataset), so the
    streams never coincide.
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(epoch),)))
    return rng.permutation(n)


class EpochSampler(Sampler[int]):
    """This process's items of an epoch, in the order ``epoch_permutation(n, seed, epoch)``.

    With several processes (a torch.distributed group is initialised), the permutation is padded by
    its head to a multiple of the world size and rank ``r`` takes every world-size-th item from ``r``,
    as DistributedSampler does; give Lightning ``use_distributed_sampler=False``. ``resume(epoch,
    batches)`` makes the next iteration of that epoch leave out its first ``batches`` batches of
    ``batch_size`` (the length stays the epoch's, as Lightning counts the skipped batches as done).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = int(n), int(batch_size), int(seed), shuffle
        self.epoch = 0
        self._skip_epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch (a resumed epoch included)."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches: int) -> None:
        """Start at ``epoch``; its next iteration leaves out the first ``batches`` batches."""
        self.epoch = int(epoch)
        self._skip_epoch, self._skip = int(epoch), int(batches) * self.batch_size

    def __len__(self) -> int:
        _, world = _world()
        return -(-self.n // world)

    def indices(self, epoch: int) -> list[int]:
        """This process's items of ``epoch``, in order, none skipped."""
        rank, world = _world()
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else np.arange(self.n)
        total = -(-self.n // world) * world
        if total > self.n:
            order = np.concatenate([order, np.resize(order, total - self.n)])
        return order[rank:total:world].tolist()

    def __iter__(self) -> Iterator[int]:
        items = self.indices(self.epoch)
        if self._skip and self._skip_epoch == self.epoch:
            items = items[self._skip:]
        self._skip = 0  # consumed: later epochs (and a re-iteration) are whole
        return iter(items)
