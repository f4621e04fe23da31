"""The package reads as the pipeline: each sub-package imports only itself and the stages before it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "pruneyolo"

# The pipeline, first stage first. Modules directly in pruneyolo/ (errors, files, activations) are the base.
STAGES = ("darknet", "yolov5", "modelfile", "nn", "detect", "data", "export", "accuracy", "prune", "train", "runner",
          "bench", "cli")


def stage_rank(module: str) -> int:
    """0 for the base modules, then 1 + the position of the module's sub-package in STAGES."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in STAGES:
        return 1 + STAGES.index(parts[1])
    if len(parts) == 2 and parts[1] in STAGES:  # the sub-package itself
        return 1 + STAGES.index(parts[1])
    return 0


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every pruneyolo import in the file, top level or inside functions."""
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name if (PACKAGE.parent / name.replace(".", "/")).exists()
                       or (PACKAGE.parent / f"{name.replace('.', '/')}.py").exists() else target)
                      for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "pruneyolo" or name.startswith("pruneyolo.")]


def backward_imports() -> list[str]:
    arrows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for line, imported in imported_modules(path):
            if stage_rank(imported) > stage_rank(importer):
                arrows.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} imports {imported}")
    return arrows


def test_every_module_is_in_a_known_stage():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "errors", "files", "activations")]
    packages = [p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert loose == []
    assert set(packages) - {"templates"} <= set(STAGES)


def test_imports_only_point_back_up_the_pipeline():
    assert backward_imports() == []


def test_the_check_sees_a_backward_import(tmp_path, monkeypatch):
    fake = tmp_path / "pruneyolo"
    (fake / "darknet").mkdir(parents=True)
    (fake / "export").mkdir()
    (fake / "darknet" / "graph.py").write_text("def f():\n    from pruneyolo.export.convert import save_ir\n")
    (fake / "export" / "convert.py").write_text("from ..darknet import graph\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    expected = "pruneyolo/darknet/graph.py:2: pruneyolo.darknet.graph imports pruneyolo.export.convert"
    assert backward_imports() == [expected]


@pytest.mark.parametrize("module", ["pruneyolo.cli.main", "pruneyolo.cli.model", "pruneyolo.darknet.graph"])
def test_light_modules_do_not_import_torch_or_openvino(module):
    code = f"import sys, {module}; print(sorted({{'torch', 'openvino', 'cv2'}} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_running_an_ir_needs_neither_the_cfg_parser_nor_torch():
    modules = "pruneyolo.cli.run, pruneyolo.runner.pipeline, pruneyolo.runner.adapter, pruneyolo.runner.remote"
    code = (f"import sys, {modules}; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('pruneyolo.darknet')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_ruff_is_clean_with_the_projects_rules():
    root = PACKAGE.parent
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "pruneyolo", "tests"], cwd=root,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
