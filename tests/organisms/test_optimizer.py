"""The fine-tune optimizer: SGD's heavy-ball momentum from `train.*.momentum`, checked against the update by hand."""

import dataclasses

import numpy as np
import pytest
import torch

from emis.organisms.settings import TrainConfig
from emis.organisms.train import make_optimizer

CFG = TrainConfig(steps=3, batch_size=1, lr=0.2, schedule="constant", warmup_steps=0, weight_decay=0.0,
                  loss_on="assistant", max_len=8, bf16_autocast=False, trainable=(), optimizer="sgd", momentum=0.9)


def test_sgd_momentum_follows_the_heavy_ball_update():
    """v_t = mu v_{t-1} + g_t, w_t = w_{t-1} - lr v_t, on a quadratic loss 0.5 * |w|^2 (gradient w)."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = make_optimizer([w], CFG)
    expected, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for _ in range(3):
        opt.zero_grad()
        (0.5 * (w**2).sum()).backward()
        opt.step()
        v = CFG.momentum * v + expected
        expected = expected - CFG.lr * v
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-6)
    assert not np.allclose(expected, np.array([1.0, -2.0, 0.5]) * (1 - CFG.lr) ** 3)  # momentum made a difference


def test_adamw_with_momentum_is_one_clear_error():
    with pytest.raises(ValueError, match="momentum=0.9 is an SGD setting"):
        dataclasses.replace(CFG, optimizer="adamw")
