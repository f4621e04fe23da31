"""YOLOv5 checkpoints built by the tests (no YOLOv5 code, no ../shared): safe loading, exact mapping against a
plain PyTorch forward, OpenCV reading the emitted cfg, the CLI, and one-line refusals of bad files."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import tarfile
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
import torch
import yolov5_support as y5
from click.testing import CliRunner
from support import compile_f32, opencv_heads, relative_error
from torch import nn

from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import Shortcut, load_graph
from pruneyolo.darknet.weights import read_weights
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.nn.build import DecodedModel, build_model
from pruneyolo.yolov5.checkpoint import StandIn, load_checkpoint
from pruneyolo.yolov5.mapping import focus_kernel
from pruneyolo.yolov5.source import import_checkpoint, write_import
from pruneyolo.yolov5.torchzip import SEALED, STORAGE_TYPES, Refused, read_archive

SIZE = (96, 64)  # non-square; multiples of the stand-ins' largest stride, 16


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)


def _as_input(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255


def _save(path: Path, checkpoint: dict) -> Path:
    torch.save(checkpoint, path)
    return path


def _models():
    """(id, model saved, float reference, checkpoint keys) for every stand-in variant."""
    v5 = y5.randomize(y5.v5_layout(np.random.default_rng(1)), 1)
    hardswish = y5.randomize(y5.v5_layout(np.random.default_rng(2), act=nn.Hardswish()), 2)
    v6 = y5.randomize(y5.v6_layout(np.random.default_rng(3)), 3)
    half = y5.randomize(y5.v6_layout(np.random.default_rng(4)), 4).half()
    return {"v5-pruned": (v5, lambda m: {"model": m}), "v5-hardswish": (hardswish, lambda m: {"model": m}),
            "v6": (v6, lambda m: {"model": m}),
            "v6-fp16-train": (half, lambda m: {"epoch": -1, "best_fitness": None, "model": m, "ema": None,
                                               "updates": None, "optimizer": None, "opt": {"imgsz": 64},
                                               "date": "2024-01-01"})}


MODELS = _models()


@pytest.fixture(scope="module", params=list(MODELS))
def saved(request, tmp_path_factory):
    model, keys = MODELS[request.param]
    path = tmp_path_factory.mktemp("y5") / f"{request.param}.pt"
    torch.save(keys(model), path)
    return request.param, path, model


def _expected_raw(graph, raws):
    """The raw heads the graph emits: after the head conv's logistic in darknet form, logits in the dialect."""
    return [_sigmoid(r) if head.decode == "new_coords" else r for head, r in zip(graph.heads, raws, strict=True)]


def test_focus_kernel_equals_space_to_depth_then_conv():
    kernel = torch.randn(5, 12, 3, 3)
    x = torch.randn(1, 3, 16, 12)
    stacked = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    expected = torch.nn.functional.conv2d(stacked, kernel, padding=1)
    actual = torch.nn.functional.conv2d(x, torch.from_numpy(focus_kernel(kernel.numpy())), stride=2, padding=2)
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, atol=1e-5)


def test_imported_model_equals_the_pytorch_forward(saved):
    name, path, model = saved
    graph, imported = import_checkpoint(path, SIZE)
    assert graph.dialect == ("yolov5" if name == "v5-hardswish" else "darknet")
    assert graph.input_shape == (3, SIZE[1], SIZE[0])
    assert graph.params == sum(p.numel() for p in model.parameters())
    assert imported.names == ([f"thing{i}" for i in range(3)] if name.startswith("v5") else ["kind0", "kind1"])
    image = _frame()
    raws, decoded = y5.reference(model, image)
    module = build_model(graph, imported.weights)
    with torch.no_grad():
        actual = [r.numpy() for r in module(_as_input(image))]
        actual_decoded = DecodedModel(module, graph)(_as_input(image)).numpy()
    for got, want in zip(actual, _expected_raw(graph, raws), strict=True):
        assert got.shape == want.shape and relative_error(got, want) < 1e-4
    assert actual_decoded.shape == decoded.shape and relative_error(actual_decoded, decoded) < 1e-4
    assert np.abs(decoded[..., 4]).max() > 0.05  # a real signal


def test_detect_anchors_and_heads_become_new_coords_yolo(saved):
    name, path, _ = saved
    graph, imported = import_checkpoint(path, SIZE)
    assert [head.stride for head in graph.heads] == y5.STRIDES
    assert [head.head_anchors for head in graph.heads] == [tuple(map(tuple, level)) for level in y5.ANCHORS]
    assert all(head.scale_x_y == 2.0 for head in graph.heads)
    if name != "v5-hardswish":
        assert "new_coords=1" in imported.cfg_text and "activation=logistic" in imported.cfg_text
        assert "activation=swish" in imported.cfg_text
        assert all(head.decode == "new_coords" for head in graph.heads)


@pytest.mark.parametrize("name", ["v5-pruned", "v6"])
def test_opencv_reads_the_emitted_cfg_and_weights(name, tmp_path):
    model, keys = MODELS[name]
    path = _save(tmp_path / "model.pt", keys(model))
    graph = write_import(path, tmp_path / "out", SIZE)[0]
    cv2.setNumThreads(1)
    net = cv2.dnn.readNetFromDarknet(str(tmp_path / "out/model.cfg"), str(tmp_path / "out/model.weights"))
    image = _frame(1)
    heads = opencv_heads(net, graph, cv2.dnn.blobFromImage(image, 1 / 255.0, swapRB=True))
    raws, _ = y5.reference(model, image)
    for got, want in zip(heads, _expected_raw(graph, raws), strict=True):
        assert got.shape == want.shape and relative_error(got, want) < 1e-3


def test_import_command_writes_cfg_weights_names(tmp_path):
    model, keys = MODELS["v6"]
    path = _save(tmp_path / "best.pt", keys(model))
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out"), "--size", "96x64"])
    assert result.exit_code == 0, result.output
    cfg = tmp_path / "out/best.cfg"
    assert (tmp_path / "out/best.names").read_text() == "kind0\nkind1\n"
    graph = load_graph(cfg)
    assert graph.input_shape == (3, 64, 96)
    read_weights(tmp_path / "out/best.weights", graph)  # exactly the bytes the cfg needs
    assert "size=6\nstride=2\npadding=2" in cfg.read_text()  # the 6x6 stem
    assert "head 1:" in result.output and "stride 16" in result.output


def test_convert_checkpoint_ir_matches_the_pytorch_forward(tmp_path):
    model, keys = MODELS["v5-pruned"]
    path = _save(tmp_path / "pruned.pt", keys(model))
    image = _frame(2)
    raws, decoded = y5.reference(model, image)
    for heads in ("decoded", "raw"):
        out = tmp_path / heads
        result = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "--heads", heads, "--size", "96x64"])
        assert result.exit_code == 0, result.output
        compiled = compile_f32(str(out / "pruned.xml"))
        results = compiled(image[None])
        outputs = [results[output] for output in compiled.outputs]
        info = ModelInfo.read(ov.Core().read_model(str(out / "pruned.xml")))
        assert info.labels == ["thing0", "thing1", "thing2"] and (info.input_width, info.input_height) == SIZE
        expected = [decoded] if heads == "decoded" else [_sigmoid(r) for r in raws]
        for got, want in zip(outputs, expected, strict=True):
            assert relative_error(got, want) < 1e-3
        del compiled


@pytest.fixture(scope="module")
def pruned_checkpoint(tmp_path_factory):
    model, keys = MODELS["v5-pruned"]
    return _save(tmp_path_factory.mktemp("cli") / "m.pt", keys(model))


def test_inspect_codegen_gammas_and_prune_take_a_checkpoint(pruned_checkpoint, tmp_path):
    path, runner = pruned_checkpoint, CliRunner()
    inspected = runner.invoke(main, ["inspect", str(path), "--size", "64", "--json"])
    assert inspected.exit_code == 0 and '"decode": "new_coords"' in inspected.output
    generated = runner.invoke(main, ["codegen", str(path), "-o", str(tmp_path / "m_model.py"), "--size", "64"])
    assert generated.exit_code == 0 and (tmp_path / "m_model.weights").is_file()
    plotted = runner.invoke(main, ["gammas", str(path), "-o", str(tmp_path / "g.png")])
    assert plotted.exit_code == 0 and (tmp_path / "g.png").is_file()
    pruned = runner.invoke(main, ["prune", str(path), "--percent", "0.3,0.5", "-o", str(tmp_path / "p"),
                                  "--size", "64"], terminal_width=200)
    assert pruned.exit_code == 0, pruned.output
    assert (tmp_path / "p/prune_0.5_m.cfg").is_file() and "prune sweep of m.pt" in pruned.output
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == [
        "prune_0.3_m.cfg", "prune_0.3_m.weights", "prune_0.5_m.cfg", "prune_0.5_m.weights"]
    both = runner.invoke(main, ["convert", str(path), "--weights", str(tmp_path / "x.weights"), "-o", str(tmp_path)])
    assert both.exit_code == 2 and "carries its own weights; drop them" in both.output


def test_bench_takes_a_checkpoint(pruned_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("pruneyolo.bench.timing.measure_peaks", lambda core, seconds: {"f32": 100.0})  # not under test
    result = CliRunner().invoke(main, ["bench", str(pruned_checkpoint), "--size", "64", "--seconds", "0.5",
                                       "--variants", "opencv", "--no-benchmark-app", "--plot",
                                       str(tmp_path / "b.png")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "OpenCV DNN" in result.output


# --- bad input -----------------------------------------------------------------------------------------------

class Payload:
    """Unpickling this calls `function(*args)`: what a hostile checkpoint does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _pickle_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL") and arg}


def test_payloads_inside_an_intact_checkpoint_run_nothing(tmp_path):
    marker_shell, marker_open = tmp_path / "shell_ran", tmp_path / "open_ran"
    model, _ = MODELS["v5-pruned"]
    model.model[3].note = Payload(open, str(marker_open), "w")  # hidden in a layer attribute
    try:
        path = _save(tmp_path / "evil.pt", {"model": model, "extra": Payload(os.system, f"touch {marker_shell}")})
    finally:
        del model.model[3].note
    assert {"posix system", "io open"} <= _pickle_globals(path)  # the payloads are really in the file
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out"), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert not marker_shell.exists() and not marker_open.exists()


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def open_write_pickle(path: Path) -> bytes:
    """Protocol-2 opcodes for getattr(open(path, 'w'), 'write')('pwned')."""
    return (b"\x80\x02cbuiltins\ngetattr\ncio\nopen\n" + _text(str(path)) + _text("w") + b"\x86R"
            + _text("write") + b"\x86R" + _text("pwned") + b"\x85R.")


LEGACY = "torch's legacy (pre-1.6, non-zip) format, which pruneyolo does not read; re-save it with a recent torch"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def legacy_patch_writer(stem: Path) -> bytes:
    """A legacy-format checkpoint on which torch's loader writes `stem`.patch (content chosen by the file).

    Its persistent id ('module', class, file, source) makes torch compare `source` with the class's source and,
    if the class has `dump_patches`, append a diff to `<class __name__>.patch`; BUILD sets both on the function
    the allow-list returned for torch._utils._rebuild_tensor_v2.
    """
    header = b"".join(pickle.dumps(value, protocol=2) for value in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    body = (b"\x80\x02(" + _text("module") + b"ctorch._utils\n_rebuild_tensor_v2\n"
            + b"N}" + _text("dump_patches") + b"\x88s" + _text("__name__") + _text(str(stem)) + b"s\x86b"
            + _text("src.py") + _text("written by the checkpoint") + b"tQ.")
    return header + body + pickle.dumps([], protocol=2)


def legacy_tar(value) -> bytes:
    """torch's oldest format: a tar of sys_info, pickle, storages and tensors records."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in (("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                                      "type_sizes": {"short": 2, "int": 4, "long": 4}})),
                           ("pickle", pickle.dumps(value, protocol=2)), ("storages", pickle.dumps(0)),
                           ("tensors", pickle.dumps(0))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words its one-line error must contain)."""
    model, _ = MODELS["v5-pruned"]
    good = _save(tmp_path / "good.pt", {"model": model})
    files = {}
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["truncated"] = (truncated, "truncated")
    not_checkpoint = tmp_path / "notes.pt"
    with zipfile.ZipFile(not_checkpoint, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    files["zip-not-checkpoint"] = (not_checkpoint, "not a torch.save checkpoint")
    files["state-dict"] = (_save(tmp_path / "sd.pt", {"model": model.state_dict()}), "only a state_dict")
    torch.save(model.state_dict(), tmp_path / "bare_sd.pt")
    files["bare-state-dict"] = (tmp_path / "bare_sd.pt", "model object")
    unknown = y5.ModelPruned([(-1, y5.Conv(3, 4, 3, 2)), (-1, y5.C2f()), ([1], y5.Detect(1, y5.ANCHORS[:1], [4],
                                                                                           [2]))], ["a"])
    files["unknown-class"] = (_save(tmp_path / "v8.pt", {"model": unknown}), "layer 1 (C2f): C2f is not a YOLOv5 layer")
    gelu = y5.ModelPruned([(-1, y5.Conv(3, 4, 3, 2, act=nn.GELU())), (-1, y5.Detect(1, y5.ANCHORS[:1], [4], [2]))],
                          ["a"])
    files["unknown-activation"] = (_save(tmp_path / "gelu.pt", {"model": gelu}),
                                   "layer 0 (Conv).act: activation GELU is not supported")
    marker = tmp_path / "ran"
    files["payload-as-model"] = (_save(tmp_path / "evil_root.pt", {"model": Payload(os.system, f"touch {marker}")}),
                                 "no model object")
    legacy = tmp_path / "legacy.pt"
    torch.save(Payload(os.system, f"touch {marker}"), legacy, _use_new_zipfile_serialization=False)
    files["payload-legacy-format"] = (legacy, LEGACY)
    raw_pickle = tmp_path / "raw.pt"
    raw_pickle.write_bytes(pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=2))
    files["payload-plain-pickle"] = (raw_pickle, LEGACY)
    writer = tmp_path / "writer.pt"
    writer.write_bytes(open_write_pickle(marker))
    files["payload-open-write"] = (writer, LEGACY)
    files["legacy-patch-writer"] = (_write(tmp_path / "patch.pt", legacy_patch_writer(tmp_path / "ran")), LEGACY)
    files["legacy-tar"] = (_write(tmp_path / "tar.pt", legacy_tar(Payload(os.system, f"touch {marker}"))),
                           "legacy tar format")
    scripted = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, not gone
        torch.jit.script(nn.Conv2d(3, 4, 1)).save(str(scripted))
    files["torchscript"] = (scripted, "TorchScript")
    text = tmp_path / "text.pt"
    text.write_text("[net]\nwidth=64\n")
    files["text"] = (text, "not a PyTorch checkpoint")
    files["missing"] = (tmp_path / "absent.pt", "cannot read the checkpoint")
    return files


BAD = ["truncated", "zip-not-checkpoint", "state-dict", "bare-state-dict", "unknown-class", "unknown-activation",
       "payload-as-model",
       "payload-legacy-format", "payload-plain-pickle", "payload-open-write", "legacy-patch-writer", "legacy-tar",
       "torchscript", "text", "missing"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad")
    return directory, _bad_files(directory)


@pytest.mark.parametrize("name", BAD)
def test_bad_files_give_one_line_exit_2_and_write_nothing(bad_files, name, tmp_path):
    directory, files = bad_files
    path, words = files[name]
    for command in (["import", str(path), "-o", str(tmp_path / "out")],
                    ["convert", str(path), "-o", str(tmp_path / "out")]):
        result = CliRunner().invoke(main, command)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and words in lines[0], lines
        assert "Traceback" not in result.output
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (directory / "ran").exists() and not (directory / "ran.patch").exists()


def test_size_must_be_a_multiple_of_the_largest_stride(pruned_checkpoint, tmp_path):
    result = CliRunner().invoke(main, ["import", str(pruned_checkpoint), "-o", str(tmp_path), "--size", "100x64"])
    assert result.exit_code == 2 and "multiple of the largest stride 16" in result.output
    assert not any(tmp_path.iterdir())


def test_loader_keeps_hostile_objects_inert(tmp_path):
    marker = tmp_path / "ran"
    model, _ = MODELS["v6"]
    path = _save(tmp_path / "m.pt", {"model": model, "evil": Payload(os.system, f"touch {marker}")})
    checkpoint = load_checkpoint(path)
    assert checkpoint.model.kind == "DetectionModel" and not marker.exists()
    with open(path, "rb") as handle:
        loaded = read_archive(handle, path.stat().st_size)
    assert isinstance(loaded["evil"], StandIn) and type(loaded["evil"]).__name__ == "system"
    assert loaded["evil"]._standin_args == (f"touch {marker}",) and not marker.exists()


def test_residual_channels_stay_tied_in_the_imported_graph(saved):
    _, path, _ = saved
    graph, _ = import_checkpoint(path, SIZE)
    shortcuts = [node for node in graph.nodes if isinstance(node, Shortcut)]
    assert shortcuts and all(graph.nodes[i].out_channels == node.out_channels for node in shortcuts
                             for i in node.inputs)


def test_a_legacy_checkpoint_writes_no_patch_file(tmp_path, monkeypatch):
    """torch's legacy loader, given this file, appended the file's text to <any path>.patch (before the fix)."""
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path / "patch.pt", legacy_patch_writer(tmp_path / "elsewhere" / "pwned"))
    (tmp_path / "elsewhere").mkdir()
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and LEGACY in result.output
    assert not (tmp_path / "elsewhere/pwned.patch").exists() and not list(tmp_path.rglob("*.patch"))


def test_build_cannot_change_what_the_allow_list_returns(tmp_path):
    """A zip checkpoint whose pickle BUILDs dump_patches/__name__ onto each allow-listed global is refused."""
    targets = [*SEALED, *STORAGE_TYPES, ("torch._utils", "_rebuild_tensor_v2")]
    for module, name in targets:
        body = (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"N}" + _text("dump_patches") + b"\x88s"
                + _text("__name__") + _text("pwned") + b"s\x86b.")
        path = _zip_checkpoint(tmp_path / "build.pt", body)
        with open(path, "rb") as handle, pytest.raises(Refused, match=f"sets the state of (torch.)?{module}.{name}"):
            read_archive(handle, path.stat().st_size)
    for value in (*SEALED.values(), *STORAGE_TYPES.values()):
        assert not hasattr(value, "__dict__")
        with pytest.raises(Refused, match="sets attribute 'dump_patches'"):
            value.dump_patches = True
    assert all(repr(value) == f"{module}.{name}" for (module, name), value in SEALED.items())


def _zip_checkpoint(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A torch.save-style zip holding `data_pkl` and the given records (e.g. data/0)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for name, data in (records or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path
