"""Run an IR under OpenVINO 2022.3 LTS (the NCS2 release, Python 3.10 only) from a cached venv."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

PY310 = Path("/root/.pyenv/versions/3.10.13/bin/python")
VENV = Path.home() / ".cache" / "pruneyolo" / "ov2022-py310"
REQUIREMENTS = ("openvino==2022.3.2", "numpy<2")
INFER_SCRIPT = Path(__file__).with_name("ov2022_infer.py")


def find_python310() -> Path | None:
    """The Python 3.10 interpreter to build the venv with ($PRUNEYOLO_PY310, pyenv, PATH), or None."""
    override = os.environ.get("PRUNEYOLO_PY310")
    if override:
        return Path(override)
    if PY310.exists():
        return PY310
    found = shutil.which("python3.10")
    return Path(found) if found else None


def ensure_venv(python310: Path, venv: Path = VENV) -> Path:
    """The venv's python, building the venv in a temp dir and renaming it into place on first use."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=venv.name + ".tmp-", dir=venv.parent))
    try:
        subprocess.run([str(python310), "-m", "venv", str(staging)], check=True)
        pip = [str(staging / "bin" / "python"), "-m", "pip", "install", "-q", *REQUIREMENTS]
        subprocess.run(pip, check=True)
        staging.rename(venv)
    except OSError:
        if not python.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return python


def infer_2022(xml: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the IR at `xml` for positional `inputs` on OpenVINO 2022.3's CPU; skips without 3.10."""
    python310 = find_python310()
    if python310 is None:
        pytest.skip(f"OpenVINO 2022.3 needs Python 3.10: {PY310} absent and no python3.10 on PATH")
    python = ensure_venv(python310)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(src, *inputs)
        cmd = [str(python), str(INFER_SCRIPT), str(xml), str(src), str(dst)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"OpenVINO 2022.3 failed on {xml}:\n{done.stderr}")
        with np.load(dst) as outputs:
            return [outputs[f"arr_{i}"] for i in range(len(outputs.files))]
