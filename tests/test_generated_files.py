"""Generated files are safe and readable: codegen escapes what it renders (and writes valid UTF-8 whatever the
cfg's name), atomic_write honours the umask, drops setuid/setgid/sticky bits and never replaces a FIFO or device."""

from __future__ import annotations

import importlib.util
import os
import stat
import warnings

import pytest
import torch

from pruneyolo.darknet.graph import load_graph
from pruneyolo.errors import CfgError, PruneyoloError
from pruneyolo.files import atomic_write
from pruneyolo.nn.codegen import class_name_for, render_model

SMALL = """[net]
width=32
height=32

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=LEAKY

[upsample]
stride=2
scale=  +2.5E-1

[convolutional]
filters=18
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=1e1,14, 2.3E1,27, 37.0,5.8e+1
classes=1
num=3
"""

HOSTILE_NAMES = [
    'x""";print("INJECTED");""".cfg',  # closes the docstring, runs code, reopens one
    'x\n"""\nprint("INJECTED")\n""".cfg',  # the same over several lines
    "x\\N.cfg",  # a malformed \N{...} escape: a SyntaxError if pasted raw
    "ends with a backslash\\",  # would escape the closing quotes
    "x\u2028\x1b[31m\t'''.cfg",  # a line separator, a terminal escape, a tab and single quotes
    "route.cfg",  # CamelCases to Route, a layer class of the generated file
    "none.cfg",  # None: a keyword
    "value_error.cfg",  # ValueError: a builtin the generated file raises
]


def import_generated(path):
    """Import a generated model file as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"generated_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_cfg_names_render_inert_and_the_module_still_works(name, tmp_path, capfd):
    cfg = tmp_path / name
    cfg.write_text(SMALL)
    graph = load_graph(cfg)
    generated = tmp_path / "generated.py"
    generated.write_text(render_model(graph))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an invalid escape such as "\ " warns at compile time
        compile(generated.read_text(), str(generated), "exec")
    module = import_generated(generated)
    assert capfd.readouterr().out == ""
    assert name in module.__doc__  # escaped for the source, the very same text once parsed
    model_class = getattr(module, class_name_for(str(cfg)))
    assert name in model_class.__doc__
    assert module.Route is not model_class and vars(module).get("ValueError", ValueError) is ValueError
    with torch.no_grad():
        heads = model_class().eval()(torch.rand(1, 3, 32, 32))
    assert [tuple(head.shape) for head in heads] == [(1, 18, 32, 32)]


def test_unusual_numbers_render_as_the_values_they_spell(tmp_path):
    cfg = tmp_path / "numbers.cfg"
    cfg.write_text(SMALL)
    text = render_model(load_graph(cfg))
    assert "Upsample(scale=0.25)" in text and "anchors 10x14, 23x27, 37x58" in text


@pytest.mark.parametrize("line, value", [
    (11, 'leaky""";print("INJECTED")'),
    (11, "__import__('os').system('true')"),
    (15, "1);print('INJECTED'"),
    (25, '1"""'),
])
def test_text_in_a_numeric_or_named_value_is_a_cfg_error_not_source(line, value, tmp_path):
    lines = SMALL.splitlines()
    key = lines[line - 1].split("=", 1)[0]
    lines[line - 1] = f"{key}={value}"
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    with pytest.raises(CfgError) as error:
        load_graph(cfg)
    assert f"bad.cfg:{line}:" in str(error.value)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the old one afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_new_files_the_umask_mode(mask, expected, umask, tmp_path):
    umask(mask)
    atomic_write(tmp_path / "config.json", "{}\n")
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_atomic_write_keeps_an_existing_files_mode(tmp_path):
    path = tmp_path / "model.weights"
    path.write_bytes(b"old")
    path.chmod(0o640)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_atomic_write_failure_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "out.bin", 123)
    assert list(tmp_path.iterdir()) == []


def test_a_cfg_name_that_is_not_utf8_gives_a_utf8_file_that_imports(tmp_path):
    cfg = tmp_path / os.fsdecode(b"m\xff\xfe.cfg")
    cfg.write_text(SMALL)
    text = render_model(load_graph(cfg), str(tmp_path / os.fsdecode(b"w\xff.weights")))
    generated = tmp_path / "generated.py"
    generated.write_bytes(text.encode("utf-8"))  # strict: a lone surrogate would raise here
    module = import_generated(generated)
    assert "m\\xff\\xfe.cfg" in module.__doc__
    assert "m\\xff\\xfe.cfg" in getattr(module, class_name_for(str(cfg))).__doc__


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_atomic_write_refuses_a_fifo_or_device_in_one_line(kind, tmp_path):
    path = tmp_path / "out.cfg"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/null")  # writing "to" it must not replace the device (nor the link)
    with pytest.raises(PruneyoloError) as error:
        atomic_write(path, "[net]\n")
    assert str(error.value).startswith(f"{path}: is a ") and "\n" not in str(error.value)
    assert ("named pipe" if kind == "fifo" else "device") in str(error.value)
    assert stat.S_ISFIFO(path.stat().st_mode) if kind == "fifo" else path.is_symlink()
    assert [p.name for p in tmp_path.iterdir()] == ["out.cfg"]  # no temporary left


def test_atomic_write_over_a_setuid_file_drops_setuid_setgid_and_sticky(tmp_path):
    path = tmp_path / "tool"
    path.write_bytes(b"old")
    path.chmod(0o7755)
    assert stat.S_IMODE(path.stat().st_mode) & 0o7000  # the file system kept them (not nosuid)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o755
