"""Run folders: their layout, finding a checkpoint, loading a trained model (a registry model, a user's factory or
CARSO) and its data, users' own models and weights, ensembles of runs."""

from __future__ import annotations

from robustlab.runs.folder import (
    CONFIG_FILE,
    PRESET_FILE,
    SCALER_FILE,
    resolve_checkpoint,
    run_config,
    run_folder_of,
    run_protocol_source,
    training_attack,
    write_preset_file,
)
from robustlab.runs.loading import load_run_points, load_trained_model, run_data
from robustlab.runs.user_model import convert_weights, load_user_model

__all__ = [
    "CONFIG_FILE",
    "PRESET_FILE",
    "SCALER_FILE",
    "convert_weights",
    "load_run_points",
    "load_trained_model",
    "load_user_model",
    "resolve_checkpoint",
    "run_config",
    "run_data",
    "run_folder_of",
    "run_protocol_source",
    "training_attack",
    "write_preset_file",
]
