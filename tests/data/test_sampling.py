"""Training order and per-image augmentation seeds: reproducible, partitioned under DDP, resumable mid-epoch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chestx.data.loading.dataset import FileSource, XrayDataset
from chestx.data.loading.sampling import EpochSampler, ResumableDataLoader, item_seed
from chestx.data.loading.transforms import build_transform


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        return torch.tensor(key)  # (2,) row, epoch


def _keys(sampler: EpochSampler) -> list[tuple[int, int]]:
    return list(iter(sampler))


def test_order_depends_on_seed_and_epoch_only() -> None:
    a, b = EpochSampler(_Rows(50), seed=7), EpochSampler(_Rows(50), seed=7)
    assert _keys(a) == _keys(b)
    assert sorted(i for i, _ in _keys(a)) == list(range(50)) and {e for _, e in _keys(a)} == {0}
    a.set_epoch(1)
    assert _keys(a) != _keys(b) and {e for _, e in _keys(a)} == {1}
    assert _keys(EpochSampler(_Rows(50), seed=8)) != _keys(b)


def test_ranks_share_the_epoch_without_overlap() -> None:
    ranks = [EpochSampler(_Rows(40), seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    rows = [[i for i, _ in _keys(s)] for s in ranks]
    assert len(rows[0]) == len(rows[1]) == 20 and sorted(rows[0] + rows[1]) == list(range(40))


def _loader(n: int, batch_size: int, done: int = 0, workers: int = 0) -> ResumableDataLoader:
    return ResumableDataLoader(_Rows(n), batch_size=batch_size, sampler=EpochSampler(_Rows(n), seed=3),
                               batches_done=lambda: done, num_workers=workers)


def test_resume_mid_epoch_continues_with_the_next_batch() -> None:
    whole = _loader(23, 4)
    whole.sampler.set_epoch(2)
    batches = [b.tolist() for b in whole]  # 6 batches, the last one of 3
    saved = _loader(23, 4, done=2)
    saved.sampler.set_epoch(2)
    state = saved.state_dict()
    assert state == {"epoch": 2, "batches_done": 2, "batch_size": 4, "samples": 23}
    resumed = _loader(23, 4)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == batches[2:]
    assert [b.tolist() for b in resumed] == batches  # the skip applies to one iteration only


def test_resume_at_the_end_of_an_epoch_starts_the_next() -> None:
    ended = _loader(23, 4, done=6)
    resumed = _loader(23, 4)
    resumed.load_state_dict(ended.state_dict())
    nxt = _loader(23, 4)
    nxt.sampler.set_epoch(1)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in nxt]


def test_resume_with_other_loader_settings_restarts_the_epoch(caplog) -> None:
    state = _loader(23, 4, done=2).state_dict()
    resumed = _loader(23, 8)
    resumed.load_state_dict(state)
    assert len(list(resumed)) == 3 and "from the beginning" in caplog.text


def test_augmentation_per_image_does_not_depend_on_workers_or_history(sample_root: Path) -> None:
    """Real NIH images: the same (row, epoch) gets the same augmentation in-process, in 2 workers, in any order."""
    paths = sorted((sample_root / "images").glob("*.png"))[:12]
    labels = np.zeros((12, 2), dtype=np.float32)
    dataset = XrayDataset(FileSource(paths), labels, labels, labels.astype(bool),
                          build_transform(64, train=True, seed=5, normalize=False), seed=5)
    first = dataset[(3, 1)]["image"]
    for key in [(0, 1), (7, 0), (3, 2)]:
        dataset[key]
    assert torch.equal(dataset[(3, 1)]["image"], first)
    assert not torch.equal(dataset[(3, 2)]["image"], first)  # another epoch, another augmentation
    in_process = [b["image"] for b in ResumableDataLoader(dataset, batch_size=4, sampler=EpochSampler(dataset, 5))]
    workers = [b["image"] for b in ResumableDataLoader(dataset, batch_size=4, sampler=EpochSampler(dataset, 5),
                                                       num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(in_process, workers, strict=True))


def test_item_seed_is_a_stable_uint32() -> None:
    assert item_seed(0, 0, 0) == item_seed(0, 0, 0) != item_seed(0, 0, 1)
    assert item_seed(2**40, 3, 5) == item_seed(2**40 % 2**32, 3, 5)
    assert 0 <= item_seed(9, 9, 9) < 2**32


def test_loader_needs_an_epoch_sampler() -> None:
    with pytest.raises(TypeError, match="EpochSampler"):
        ResumableDataLoader(_Rows(4), batch_size=2)
