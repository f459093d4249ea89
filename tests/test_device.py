"""Device selection and the bf16 speed guard."""

from __future__ import annotations

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.utils import device as D


def test_auto_is_cpu_without_cuda_and_missing_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    assert D.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device"):
        D.resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        D.resolve_device("gpu0")


def test_model_device_of_a_parameter_free_model_is_the_cpu() -> None:
    assert D.model_device(torch.nn.Identity()) == torch.device("cpu")
    assert D.model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_falls_back_to_fp32_with_a_warning_where_it_is_emulated(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(D, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    assert D.effective_bf16(cpu, requested=False) is False
    if native:
        assert D.effective_bf16(cpu, requested=True) is True
    else:
        with pytest.warns(RuntimeWarning, match="training in fp32"):
            assert D.effective_bf16(cpu, requested=True) is False


def test_bf16_run_records_the_effective_precision(tmp_path, monkeypatch) -> None:
    import json

    from robustlab.training.trainer import Trainer
    from tests._training_helpers import tiny_config

    monkeypatch.setattr(D, "native_bf16", lambda device: False)
    cfg = tiny_config(epochs=1, bf16=True, max_steps_per_epoch=2)
    with pytest.warns(RuntimeWarning, match="training in fp32"):
        Trainer(cfg, tmp_path / "r", show_progress=False).fit()
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["bf16"] is False
