"""The organisms' optimizers: SGD's heavy-ball momentum from `train.*.momentum`, checked against the update by hand,
and Muon's split of the parameters and its orthogonalised update, checked against numpy's SVD."""

import dataclasses

import numpy as np
import pytest
import torch

from emis.organisms.settings import TrainConfig
from emis.organisms.train import make_optimizers

CFG = TrainConfig(steps=3, batch_size=1, lr=0.2, schedule="constant", warmup_steps=0, weight_decay=0.0,
                  loss_on="assistant", max_len=8, bf16_autocast=False, trainable=(), optimizer="sgd", momentum=0.9)


def test_sgd_momentum_follows_the_heavy_ball_update():
    """v_t = mu v_{t-1} + g_t, w_t = w_{t-1} - lr v_t, on a quadratic loss 0.5 * |w|^2 (gradient w)."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    (opt,) = make_optimizers([w], CFG)
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
    with pytest.raises(ValueError, match="momentum=0.9 is an SGD or Muon setting"):
        dataclasses.replace(CFG, optimizer="adamw")


MUON = dataclasses.replace(CFG, optimizer="muon", lr=0.01, momentum=0.95)


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    emb, w, norm = (torch.nn.Parameter(torch.randn(*s)) for s in ((10, 4), (4, 6), (4,)))
    muon, adamw = make_optimizers([emb, w, norm], MUON, embeddings=[emb])
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert [p is w for p in muon.param_groups[0]["params"]] == [True]
    assert {id(p) for p in adamw.param_groups[0]["params"]} == {id(emb), id(norm)}
    assert [type(o) for o in make_optimizers([norm], MUON)] == [torch.optim.AdamW]  # no matrix: AdamW alone


def test_muon_step_is_the_orthogonalised_gradient_at_the_adamw_matched_rate():
    """First step on loss sum(W * G): update ~ -lr * 0.2 * sqrt(max(m, n)) * U V^T of G (Newton-Schulz is approximate,
    so its singular values sit near 1, not at 1)."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(16, 40))
    w = torch.nn.Parameter(torch.zeros(16, 40, dtype=torch.float64))
    (opt,) = make_optimizers([w], dataclasses.replace(MUON, weight_decay=0.0))
    (w * torch.from_numpy(g)).sum().backward()
    opt.step()
    u, _, vt = np.linalg.svd(g, full_matrices=False)
    step = -w.detach().numpy() / (MUON.lr * 0.2 * np.sqrt(40))
    cosine = (step * (u @ vt)).sum() / np.linalg.norm(step) / np.linalg.norm(u @ vt)
    assert cosine > 0.95
    singular = np.linalg.svd(step, compute_uv=False)
    assert 0.65 < singular.min() and 1.0 < singular.max() < 1.2  # Keller's scaling would give 0.54-0.90 here
