"""A dense rest block that cannot fit in memory is refused before it is allocated."""

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import ModelSpecificationError
from mixedmodels.linalg import memory


def test_check_dense_block_names_terms_and_sizes():
    with pytest.raises(ModelSpecificationError) as info:
        memory.check_dense_block(100_001, "(1 | item)", available=8 * 10**9)
    message = str(info.value)
    assert "(1 | item)" in message
    assert "160 GB" in message  # 2 copies x 8 bytes x 100,001^2
    assert "8.0 GB" in message
    assert "\n" not in message


def test_check_dense_block_passes_when_it_fits_or_memory_is_unknown(monkeypatch):
    memory.check_dense_block(10_001, "(1 | item)", available=2 * 10**9)  # 1.6 GB fits
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    memory.check_dense_block(10**6, "(1 | item)")  # unknown memory: no verdict


def test_available_bytes_is_positive():
    got = memory.available_bytes()
    assert got is None or got > 0


def test_lmer_refuses_before_allocating(monkeypatch):
    rng = np.random.default_rng(3)
    n = 6000
    frame = pd.DataFrame(
        {
            "user": rng.integers(0, 3000, n).astype(str),
            "item": rng.integers(0, 2500, n).astype(str),
            "x": rng.normal(size=n),
        }
    )
    frame["y"] = frame["x"] + rng.normal(size=n)
    # 2,500-odd item effects: a dense block of ~2500^2 doubles (~100 MB for two copies).
    monkeypatch.setattr(memory, "available_bytes", lambda: 10 * 2**20)
    with pytest.raises(ModelSpecificationError, match=r"\(1 \| item\).*more than the"):
        mm.lmer("y ~ x + (1 | user) + (1 | item)", frame)
