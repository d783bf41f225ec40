"""The training order, and how it resumes in the middle of an epoch.

`EpochSampler` shuffles by (seed, epoch) as torch's DistributedSampler does (one process is a
world of one; under DDP each rank takes its share, and Lightning leaves a DistributedSampler in
place) and yields `(index, epoch)` keys, so that `XrayDataset` seeds each image's augmentation
from (seed, epoch, index): what an image gets no longer depends on which loader worker drew it or
on what that worker drew before, which is what makes a resumed run equal an uninterrupted one (and
results the same for any `data.num_workers`).

`ResumableDataLoader` is the DataLoader Lightning saves into every checkpoint (its `state_dict`)
as the epoch and the number of batches the model has trained on in it; `ckpt_path=last` after a
kill in the middle of an epoch puts the sampler back there, so the run goes on with the next batch
it would have trained on.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset row `index` in `epoch` of a run with `seed` (uint32)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """Shuffled (index, epoch) keys of one rank, reproducible from (seed, epoch); can start mid-epoch."""

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._skip = 0  # keys of the current epoch already trained on (set by `resume`, used by the next iterator)

    def resume(self, epoch: int, samples_done: int) -> None:
        """Make the next iteration the rest of `epoch` after its first `samples_done` keys."""
        self.set_epoch(epoch)
        self._skip = int(samples_done)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self._skip:]  # this rank's share of the (seed, epoch) permutation
        epoch, self._skip = self.epoch, 0
        return iter([(int(i), epoch) for i in indices])


class ResumableDataLoader(DataLoader):
    """A DataLoader over an `EpochSampler` whose position Lightning checkpoints (epoch, batches trained).

    `batches_done` tells how many batches of the current epoch the model has trained on; the
    loader itself cannot know it (Lightning fetches a batch ahead of the one it trains on).
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError(f"ResumableDataLoader needs an EpochSampler, got {type(self.sampler).__name__}")
        self.batches_done = batches_done or (lambda: 0)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches_done": int(self.batches_done()),
                "batch_size": int(self.batch_size or 1), "samples": len(self.sampler)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("samples") != len(self.sampler) or state.get("batch_size") != self.batch_size:
            log.warning("The checkpoint's training loader had %s images per process in batches of %s, this run has "
                        "%d in batches of %s: starting its epoch from the beginning", state.get("samples"),
                        state.get("batch_size"), len(self.sampler), self.batch_size)
            self.sampler.resume(int(state.get("epoch", 0)), 0)
            return
        done = min(state["batches_done"] * state["batch_size"], state["samples"])
        if done >= state["samples"]:  # saved at the end of an epoch: the next one starts from its beginning
            self.sampler.resume(state["epoch"] + 1, 0)
            return
        log.info("Resuming in the middle of epoch %d: %d of %d batches were trained on, continuing with batch %d",
                 state["epoch"], state["batches_done"], -(-state["samples"] // state["batch_size"]),
                 state["batches_done"] + 1)
        self.sampler.resume(state["epoch"], done)
