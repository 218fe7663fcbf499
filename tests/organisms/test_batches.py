"""Length-grouped training batches: `length_group` batches are drawn together and split by length, so a group's
batches never overlap in length and padding falls as the group grows."""

import random

import numpy as np
import pytest

from emis.organisms.settings import TrainConfig
from emis.organisms.train import Encoded, _length_grouped_batches


def _config(steps: int, batch_size: int, length_group: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=0.1, schedule="constant", warmup_steps=0,
                       weight_decay=0.0, loss_on="all", max_len=256, bf16_autocast=False, trainable=(),
                       optimizer="sgd", momentum=0.0, length_group=length_group)


def _data(n: int = 2000, seed: int = 0) -> list[Encoded]:
    lengths = np.random.default_rng(seed).integers(10, 250, size=n)
    return [Encoded([1] * int(k), [1] * int(k)) for k in lengths]


def _padding(data: list[Encoded], batches: list[list[int]]) -> float:
    """Share of a right-padded batch's positions that are padding, by hand."""
    lengths = [np.array([len(data[i].ids) for i in b]) for b in batches]
    return 1 - sum(x.sum() for x in lengths) / sum(x.max() * len(x) for x in lengths)


@pytest.mark.parametrize("length_group", [1, 4, 32])
def test_a_groups_batches_do_not_overlap_in_length(length_group: int) -> None:
    data, steps, batch_size = _data(), 64, 8
    batches = list(_length_grouped_batches(data, _config(steps, batch_size, length_group), random.Random(0)))
    assert len(batches) == steps and all(len(b) == batch_size for b in batches)
    assert all(0 <= i < len(data) for b in batches for i in b)
    for start in range(0, steps, length_group):
        spans = sorted((min(len(data[i].ids) for i in b), max(len(data[i].ids) for i in b))
                       for b in batches[start : start + length_group])
        assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))


def test_padding_falls_as_the_group_grows() -> None:
    data = _data()
    pad = {g: _padding(data, list(_length_grouped_batches(data, _config(200, 32, g), random.Random(0))))
           for g in (1, 8, 32)}
    # uniform lengths 10-249: a random batch of 32 pads about 45%; sorted groups of 8 and 32 batches far less
    assert pad[1] > 0.35 and pad[8] < 0.15 and pad[32] < pad[8] / 2
