"""An OpenVINO Model Server repository: `DIR/<name>/<version>/model.xml|bin` plus `DIR/config.json`, each convert
adding the next version."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import openvino as ov

from pruneyolo.errors import PruneyoloError
from pruneyolo.export.convert import save_ir
from pruneyolo.files import atomic_write

CONFIG_NAME = "config.json"


def model_name(stem: str) -> str:
    """A served model name from a cfg stem: letters, digits, '.', '-' and '_' kept, anything else '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def model_config(name: str, device: str | None = None, hint: str = "THROUGHPUT") -> dict:
    """One `model_config_list` entry; base_path is relative to config.json, as OVMS allows; no target_device
    unless given (OVMS then picks its default)."""
    config = {"name": name, "base_path": name, **({"target_device": device} if device else {}),
              "plugin_config": {"PERFORMANCE_HINT": hint}}
    return {"config": config}


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version folder in `model_dir` (1 if none): OVMS serves a new version
    but never notices files changing inside one it has loaded."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def read_config(path: Path) -> dict:
    """An existing config.json (or an empty one), checked to hold a model_config_list."""
    if not path.exists():
        return {"model_config_list": []}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PruneyoloError(f"{path}: not a readable OVMS config ({exc}); move it away or fix it") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_config_list", []), list):
        raise PruneyoloError(f"{path}: 'model_config_list' is not a list; move the file away or fix it")
    return config


def with_model(config: dict, entry: dict) -> dict:
    """The config with `entry` replacing any model of the same name (other models kept, in order)."""
    name = entry["config"]["name"]
    models = [m for m in config.get("model_config_list", []) if m.get("config", {}).get("name") != name]
    return {**config, "model_config_list": models + [entry]}


def write_repository(model: ov.Model, directory, name: str, device: str | None = None,
                     storage: str = "fp32") -> tuple[Path, Path]:
    """Save the IR as the next `<name>/<version>/model.xml|bin` and add the model to config.json; returns both
    paths. The version folder is staged whole beside its final place (a hidden, non-numeric name that OVMS
    ignores) and renamed into place, so a watching OVMS never sees it without its files."""
    model_dir = Path(directory) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pruneyolo-", dir=model_dir))
    try:
        save_ir(model, staging / "model.xml", storage)
        version = next_version(model_dir)
        os.rename(staging, model_dir / str(version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    config_path = Path(directory) / CONFIG_NAME
    config = with_model(read_config(config_path), model_config(name, device))
    atomic_write(config_path, json.dumps(config, indent=2) + "\n")
    return model_dir / str(version) / "model.xml", config_path
