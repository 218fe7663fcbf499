"""Shared fixtures: where the study's real files live (../shared beside the checkout)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_EM = ROOT.parent / "shared" / "data" / "em"


@pytest.fixture(scope="session")
def shared_em() -> Path:
    """The EM study's real data files; tests that read them are skipped only if the folder is absent."""
    if not SHARED_EM.is_dir():
        pytest.skip(f"{SHARED_EM} not present")
    return SHARED_EM
