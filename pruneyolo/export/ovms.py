"""An OpenVINO Model Server repository: `DIR/<name>/<version>/model.xml|bin` plus `DIR/config.json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import openvino as ov

from pruneyolo.errors import PruneyoloError
from pruneyolo.export.convert import save_ir
from pruneyolo.files import atomic_write

CONFIG_NAME = "config.json"


def model_name(stem: str) -> str:
    """A served model name from a cfg stem: letters, digits, '.', '-' and '_' kept, anything else '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def model_config(name: str, device: str = "CPU", hint: str = "THROUGHPUT") -> dict:
    """One `model_config_list` entry; base_path is relative to config.json, as OVMS allows."""
    return {"config": {"name": name, "base_path": name, "target_device": device,
                       "plugin_config": {"PERFORMANCE_HINT": hint}}}


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


def write_repository(model: ov.Model, directory, name: str, version: int = 1, device: str = "CPU",
                     precision: str = "fp32") -> tuple[Path, Path]:
    """Save the IR as `<name>/<version>/model.xml|bin` and add it to config.json; returns both paths."""
    directory = Path(directory)
    if version < 1:
        raise PruneyoloError(f"OVMS version {version}: versions are positive integers")
    xml_path = save_ir(model, directory / name / str(version) / "model.xml", precision)
    config_path = directory / CONFIG_NAME
    config = with_model(read_config(config_path), model_config(name, device))
    atomic_write(config_path, json.dumps(config, indent=2) + "\n")
    return xml_path, config_path
