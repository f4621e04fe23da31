"""Run an IR under OpenVINO 2022.3 LTS (the NCS2 release, Python 3.10 only) from a cached venv."""

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

PY310_ENV = "PRUNEYOLO_PY310"
VENV = Path.home() / ".cache" / "pruneyolo" / "ov2022-py310"
REQUIREMENTS = ("openvino==2022.3.2", "numpy<2")
INFER_SCRIPT = Path(__file__).with_name("ov2022_infer.py")
NO_PY310 = (f"OpenVINO 2022.3 needs Python 3.10: none found (set {PY310_ENV}, put python3.10 on PATH, "
            "or `pyenv install 3.10`)")


def real_python310(python: str) -> Path | None:
    """The interpreter `python` runs (a pyenv shim resolves to its version) if that is Python 3.10."""
    check = "import sys; assert sys.version_info[:2] == (3, 10); print(sys.executable)"
    try:
        done = subprocess.run([python, "-c", check], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def pyenv_pythons310() -> list[str]:
    """pyenv's installed 3.10.x interpreters under `pyenv root`, newest first."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return []
    done = subprocess.run([pyenv, "root"], check=False, capture_output=True, text=True, timeout=60)
    if done.returncode:
        return []
    found = Path(done.stdout.strip()).glob("versions/3.10*/bin/python")

    def version(path: Path) -> tuple:
        return tuple(int(part) if part.isdigit() else -1 for part in path.parents[1].name.split("."))

    return [str(path) for path in sorted(found, key=version, reverse=True)]


@functools.cache
def find_python310() -> Path | None:
    """Python 3.10 to build the venv with: $PRUNEYOLO_PY310 if set, else python3.10 on PATH, else pyenv's."""
    override = os.environ.get(PY310_ENV)
    candidates = [override] if override else [shutil.which("python3.10"), *pyenv_pythons310()]
    found = (real_python310(candidate) for candidate in candidates if candidate)
    return next((python for python in found if python), None)


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


def infer_2022_many(jobs: list[tuple[Path, list[np.ndarray]]]) -> list[list[np.ndarray]]:
    """Outputs of each (xml, positional inputs) job's IR on OpenVINO 2022.3's CPU, all in one Python 3.10 process
    (its start-up is most of the cost); skips without 3.10."""
    python310 = find_python310()
    if python310 is None:
        override = os.environ.get(PY310_ENV)
        pytest.skip(f"{PY310_ENV}={override} is not a Python 3.10 that runs" if override else NO_PY310)
    python = ensure_venv(python310)
    with tempfile.TemporaryDirectory() as tmp:
        files = [(xml, Path(tmp) / f"inputs{i}.npz", Path(tmp) / f"outputs{i}.npz") for i, (xml, _) in enumerate(jobs)]
        for (_, src, _), (_, inputs) in zip(files, jobs, strict=True):
            np.savez(src, *inputs)
        cmd = [str(python), str(INFER_SCRIPT), *(str(path) for triple in files for path in triple)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"OpenVINO 2022.3 failed on {', '.join(str(xml) for xml, _ in jobs)}:\n{done.stderr}")
        outputs = []
        for _, _, dst in files:
            with np.load(dst) as arrays:
                outputs.append([arrays[f"arr_{i}"] for i in range(len(arrays.files))])
        return outputs
