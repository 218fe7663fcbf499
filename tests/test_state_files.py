"""Nested training state round-trips through safetensors + JSON, with container and key types intact, and no pickle."""

import pytest
import torch

from emis.io import ArtifactError, load_state, save_state


def test_optimizer_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "step": 7, "losses": [1.5, None], "key": "k"}
    save_state(tmp_path / "s", state)
    back = load_state(tmp_path / "s")
    assert back["step"] == 7 and back["losses"] == [1.5, None] and back["key"] == "k"
    assert torch.equal(back["rng"], state["rng"])
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys survive
    for k, v in state["optimizer"]["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    (tmp_path / "s.json").write_text("{")
    with pytest.raises(ArtifactError, match="unreadable state"):
        load_state(tmp_path / "s")
