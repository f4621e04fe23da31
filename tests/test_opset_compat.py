"""downgrade_for_2022 after convert_model + PrePostProcessor: same outputs on 2026 and on 2022.3."""

from typing import NamedTuple

import numpy as np
import openvino as ov
import pytest
import torch
import torch.nn.functional as F
from openvino.preprocess import ColorFormat, PrePostProcessor
from ov2022 import infer_2022_many
from support import relative_error
from torch import nn

from pruneyolo.export.opset_compat import KNOWN_OPSETS, OpsetError, downgrade_for_2022, unknown_to_2022

SIZE = 26
EMITTED = {"MaxPool-opset14", "Pad-opset12", "Interpolate-opset11"}


def hard_mish(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


ACTIVATIONS = (torch.tanh, F.softplus, F.elu, F.gelu, F.relu6, F.hardswish, F.silu, hard_mish)


def darknet_maxpool(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """darknet maxpool, padding size-1: (size-1)//2 before, the rest after, reading -inf."""
    before = (size - 1) // 2
    after = size - 1 - before
    return F.max_pool2d(F.pad(x, (before, after, before, after), value=float("-inf")), size, stride)


def upsample_expand(x: torch.Tensor, s: int) -> torch.Tensor:
    """Nearest upsampling by `s` without Interpolate."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)


class Probe(nn.Module):
    """A tiny YOLO-like net with the ops pruneyolo's modules produce, and a decode tail."""

    def __init__(self, anchors: int = 2, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.group = nn.Conv2d(16, 16, 3, 1, 1, groups=4)
        self.depth = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.spp = nn.Conv2d(64, 16, 1)
        self.head = nn.Conv2d(16 * 4 + 8, anchors * (5 + classes), 1)
        self.anchors, self.classes = anchors, classes

    def body(self, x: torch.Tensor) -> torch.Tensor:
        early = F.leaky_relu(self.stem(x), 0.1)
        x = F.mish(self.group(darknet_maxpool(darknet_maxpool(early, 2, 1), 2, 2)))
        parts = zip(ACTIVATIONS, self.depth(x).split(2, 1), strict=True)
        x = torch.cat([act(part) for act, part in parts], 1) + x
        x = x.pow(2) * 0.1 + torch.sigmoid(x) * torch.exp(-x.abs())
        pools = [darknet_maxpool(x, 5, 1), F.max_pool2d(x, 9, 1, 4), F.max_pool2d(x, 13, 1, 6)]
        x = F.selu(self.spp(torch.cat([x, *pools], 1)))
        odd = F.max_pool2d(x, 2, 2, 1, ceil_mode=True) + F.avg_pool2d(x, 2, 2, ceil_mode=True)[..., :7, :7]
        x4 = [F.interpolate(odd, scale_factor=4), upsample_expand(odd, 4)]
        ups = [nn.Upsample(scale_factor=2)(x), upsample_expand(x, 2), *[u[..., :SIZE, :SIZE] for u in x4]]
        return torch.cat([*ups, early[:, 8:]], 1)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        n, _, h, w = raw.shape
        p = raw.reshape(n, self.anchors, 5 + self.classes, h, w).permute(0, 1, 3, 4, 2)
        ys = torch.arange(h, dtype=raw.dtype).view(1, 1, h, 1, 1).expand(1, 1, h, w, 1)
        xs = torch.arange(w, dtype=raw.dtype).view(1, 1, 1, w, 1).expand(1, 1, h, w, 1)
        xy = (torch.sigmoid(p[..., :2]) * 2 - 0.5 + torch.cat([xs, ys], -1)) * 8
        wh = torch.exp(p[..., 2:4].clamp(max=4))
        rest = torch.cat([torch.sigmoid(p[..., 4:5]), torch.softmax(p[..., 5:], -1)], -1)
        return torch.cat([xy, wh, rest], -1).reshape(n, -1, 5 + self.classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.head(self.body(x))
        return raw, self.decode(raw)


class Extras(nn.Module):
    """Ops a cfg might still bring: argmax, dilated/indexed/ceil pools, sized resizes, reflect pad."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled, indices = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
        dilated = F.max_pool2d(x, 3, 1, 1, dilation=2)
        resized = F.interpolate(x, size=(13, 17)) + F.interpolate(x, size=(13, 17), mode="bilinear")
        local = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, 1, count_include_pad=False)
        return x.argmax(1), pooled, indices, dilated, resized, local


class Case(NamedTuple):
    original: ov.Model
    downgraded: ov.Model
    unknown_before: list[str]
    inputs: list[np.ndarray]
    expected: list[np.ndarray]


def with_preprocessing(model: ov.Model) -> ov.Model:
    """u8 NHWC BGR in, f32 NCHW RGB / 255 to the network, as pruneyolo exports."""
    ppp = PrePostProcessor(model)
    tensor = ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    tensor.set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    return ppp.build()


def infer(model: ov.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs on the 2026 CPU plugin in f32."""
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(inputs)
    return [results[output] for output in compiled.outputs]


def make_case(build, inputs: list[np.ndarray]) -> Case:
    """Convert twice (downgrade works in place), keeping the original's op list and outputs."""
    original, downgraded = build(), downgrade_for_2022(build())
    return Case(original, downgraded, unknown_to_2022(original), inputs, infer(original, inputs))


def convert(module: nn.Module, shape: list[int]) -> ov.Model:
    return ov.convert_model(module.eval(), example_input=torch.zeros(shape), input=shape)


@pytest.fixture(scope="module")
def probe() -> Case:
    image = np.random.default_rng(0).integers(0, 256, (1, SIZE, SIZE, 3), np.uint8)
    return make_case(lambda: with_preprocessing(convert(Probe(), [1, 3, SIZE, SIZE])), [image])


@pytest.fixture(scope="module")
def extras() -> Case:
    x = np.random.default_rng(1).standard_normal((1, 4, 13, 13)).astype(np.float32)
    return make_case(lambda: convert(Extras(), [1, 4, 13, 13]), [x])


def test_convert_model_emits_ops_2022_cannot_read(probe, extras):
    assert EMITTED | {"AvgPool-opset14"} == set(probe.unknown_before)
    assert EMITTED | {"AvgPool-opset14", "TopK-opset11"} == set(extras.unknown_before)


def test_downgraded_models_are_clean(probe, extras):
    for case in (probe, extras):
        assert unknown_to_2022(case.downgraded) == []
        assert {op.get_type_info().version_id for op in case.downgraded.get_ops()} <= KNOWN_OPSETS


def test_downgrade_keeps_outputs_and_names(probe, extras):
    for case in (probe, extras):
        for got, want in zip(infer(case.downgraded, case.inputs), case.expected, strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert relative_error(got.astype(np.float64), want.astype(np.float64)) < 1e-5
        names = [output.get_names() for output in case.original.outputs]
        assert [output.get_names() for output in case.downgraded.outputs] == names


def test_preprocessed_model_matches_torch(probe):
    rgb = torch.from_numpy(probe.inputs[0][..., ::-1].transpose(0, 3, 1, 2) / np.float32(255))
    with torch.no_grad():
        expected = Probe().eval()(rgb)
    for got, want in zip(infer(probe.downgraded, probe.inputs), expected, strict=True):
        assert relative_error(got, want.numpy()) < 1e-4


def test_negative_pads_are_refused():
    class Crop(nn.Module):
        def forward(self, x):
            return F.pad(x, (-1, 1, 0, 0))

    with pytest.raises(OpsetError, match="negative pads"):
        downgrade_for_2022(convert(Crop(), [1, 2, 5, 5]))


def test_ir_runs_on_openvino_2022(probe, extras, tmp_path):
    """Both models saved in FP32 and in FP16, all four run in one OpenVINO 2022.3 process."""
    runs = [(name, case, fp16, tolerance) for fp16, tolerance in ((False, 1e-4), (True, 1e-2))
            for name, case in (("probe", probe), ("extras", extras))]
    jobs = []
    for name, case, fp16, _ in runs:
        xml = tmp_path / f"{name}{'-fp16' if fp16 else ''}.xml"
        ov.save_model(case.downgraded, xml, compress_to_fp16=fp16)
        jobs.append((xml, case.inputs))
    for (name, case, fp16, tolerance), outputs in zip(runs, infer_2022_many(jobs), strict=True):
        for got, want in zip(outputs, case.expected, strict=True):
            assert got.shape == want.shape, name
            if want.dtype.kind == "f":
                assert relative_error(got, want) < tolerance, (name, fp16)
            elif not fp16:
                np.testing.assert_array_equal(got, want)
