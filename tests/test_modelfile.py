"""One place recognises a model file: its kind, and the loader every command takes it in by."""

from __future__ import annotations

import pytest
from cfg_sources import OWN
from click.testing import CliRunner

from pruneyolo.cli.main import main
from pruneyolo.cli.options import load_for_training
from pruneyolo.errors import PruneyoloError
from pruneyolo.modelfile import load_model, model_kind, require_kind
from pruneyolo.yolov5 import ZIP_MAGIC

CFG = OWN / "tiny-maxpool.cfg"


def typo_cfg(tmp_path):
    """tiny-maxpool with one misspelt key, which the graph reports as a warning."""
    path = tmp_path / "typo.cfg"
    path.write_text(CFG.read_text().replace("[maxpool]\n", "[maxpool]\nsizee=2\n", 1))
    return path


def test_each_kind_by_suffix_any_case_or_by_content(tmp_path):
    zipped = tmp_path / "best.bin"
    zipped.write_bytes(ZIP_MAGIC + b"rest")
    names = ["a.cfg", "b.PT", "c.pth", "d.ONNX", "e.Xml", zipped, CFG]
    assert [model_kind(tmp_path / name) for name in names] == ["cfg", "checkpoint", "checkpoint", "onnx", "ir",
                                                                 "checkpoint", "cfg"]


def test_a_file_of_the_wrong_kind_is_named_as_what_it_is(tmp_path):
    with pytest.raises(PruneyoloError, match=r"m\.xml: an OpenVINO IR; this command takes a Darknet cfg or a "
                                             r"YOLOv5 checkpoint"):
        load_model(tmp_path / "m.xml", need_weights=False)
    assert require_kind(tmp_path / "m.onnx", "cfg", "onnx") == "onnx"
    inspect = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.xml")])
    assert inspect.exit_code == 2 and "an OpenVINO IR" in inspect.output


def test_compare_and_train_print_the_cfg_warnings_like_every_command(tmp_path, capsys):
    path = typo_cfg(tmp_path)
    compare = CliRunner().invoke(main, ["compare", str(path), str(CFG)])
    assert compare.exit_code == 0, compare.output
    assert compare.stderr.count("ignores unknown key 'sizee'") == 1
    load_for_training(path, None, None, tmp_path)
    assert capsys.readouterr().err.count("ignores unknown key 'sizee'") == 1
