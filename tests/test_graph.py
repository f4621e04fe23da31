"""The typed graph: darknet's shapes and BFLOPs, sloppy-but-valid input, and one clean line for bad input."""

from __future__ import annotations

import random

import pytest
from cfg_sources import CORPUS, corpus_cfg, own_cfg, shipped_cfg, with_corpus
from click.testing import CliRunner
from fixtures import random_weights

from pruneyolo.cli.main import main
from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import build_graph, load_graph
from pruneyolo.darknet.weights import read_weights, write_weights
from pruneyolo.errors import CfgError, PruneyoloError, WeightsError

TINY = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
filters=18
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def graph_of(text: str, **kwargs):
    return build_graph(parse_cfg_text(text, "test.cfg"), "test.cfg", **kwargs)


@pytest.mark.parametrize("name, size, bflops", [with_corpus("yolov4", 608, 128.459, id="yolov4"),
                                                with_corpus("yolov4-tiny", 416, 6.910, id="yolov4-tiny"),
                                                with_corpus("yolov3-tiny", 416, 5.571, id="yolov3-tiny")])
def test_bflops_match_darknet_startup_print(name, size, bflops):
    graph = load_graph(corpus_cfg(name), (size, size))
    assert round(graph.bflops, 3) == bflops


def test_tiny_shapes_params_and_maxpool_size2_stride1_keeps_size():
    graph = graph_of(TINY)
    conv, pool, _head_conv, head = graph.nodes
    assert conv.out_shape == (8, 32, 32)
    assert pool.out_shape == (8, 32, 32) and pool.pads == (0, 1, 0, 1)
    assert head.stride == 2 and head.head_anchors == ((10, 14), (23, 27), (37, 58))
    assert graph.params == 3 * 3 * 3 * 8 + 2 * 8 + 8 * 18 + 18
    # darknet counts 2 * weights * output pixels per conv, size^2 * C * H * W per maxpool
    assert graph.bflops == pytest.approx((2 * 8 * 27 + 4 * 8 + 2 * 18 * 8) * 32 * 32 / 1e9)
    assert graph.heads[0].decode == "darknet"


def test_sloppy_but_valid_text_is_accepted():
    sloppy = TINY.replace("\n", "\r\n").replace("[convolutional]", "[Convolutional]", 1)
    sloppy = sloppy.replace("mask=0,1,2", "mask = [0, 1, 2]").replace("filters=8", "filters = 8  # eight")
    assert graph_of(sloppy).nodes[0].out_shape == (8, 32, 32)


def test_route_groups_each_input_gives_its_slice_and_shortcut_keeps_first_input_channels():
    text = TINY.split("[maxpool]")[0] + """[convolutional]
filters=4
size=1
activation=leaky

[route]
layers=-2,-1
groups=2
group_id=1

[shortcut]
from=-3
activation=linear
"""
    graph = graph_of(text)
    assert graph.nodes[2].out_shape == (4 + 2, 32, 32)
    assert graph.nodes[3].out_shape == (6, 32, 32) and graph.nodes[3].inputs == (2, 0)


@pytest.mark.parametrize("path, stem, size", [
    pytest.param(own_cfg("yolov5-dialect"), 3, 16, id="yolov5-dialect"),
    with_corpus(CORPUS / "ZJU-lishuang__yolov5_prune__cfg__yolov5s_v6_hand.cfg", 0, 304, id="v6_hand"),
])
def test_dialect_detected_and_forced(path, stem, size):
    yolov5 = load_graph(path)
    assert yolov5.dialect == "yolov5" and {head.decode for head in yolov5.heads} == {"yolov5"}
    assert yolov5.nodes[stem].size == 6 and yolov5.nodes[stem].padding == 2
    assert yolov5.nodes[stem].out_shape[1:] == (size, size)
    with pytest.raises(CfgError, match="differ in spatial size"):  # darknet's k/2 pads the stem to size + 1
        load_graph(path, dialect="darknet")
    assert load_graph(own_cfg("csp-newcoords"), dialect="yolov5").heads[0].decode == "yolov5"


@pytest.mark.parametrize("path, bflops", [pytest.param(shipped_cfg("demo-tiny"), None, id="demo-tiny"),
                                          with_corpus(corpus_cfg("yolov4-tiny"), "6.910", id="yolov4-tiny")])
def test_inspect_cli_table_and_json(path, bflops):
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0
    assert f"Total BFLOPS {bflops or f'{load_graph(path).bflops:.3f}'}" in result.output
    assert "dialect: darknet" in result.output
    data = __import__("json").loads(runner.invoke(main, ["inspect", str(path), "--json",
                                                         "--size", "320x320"]).output)
    assert data["input_shape"] == [3, 320, 320] and len(data["heads"]) == 2 and data["dialect"] == "darknet"


BAD_CFGS = {
    "unknown section": (TINY.replace("[maxpool]", "[maxpooling]"), "unknown section [maxpooling]"),
    "missing =": (TINY.replace("filters=8", "filters 8"), "is not key=value"),
    "non-numeric": (TINY.replace("filters=8", "filters=eight"), "is not an integer"),
    "route out of range": (TINY.replace("[maxpool]\nsize=2\nstride=1", "[route]\nlayers=-5"), "refers to layer"),
    "mask beyond anchors": (TINY.replace("mask=0,1,2", "mask=0,1,7"), "mask index 7 is beyond"),
    "wrong head filters": (TINY.replace("filters=18", "filters=20"), "needs 18"),
    "no [net]": (TINY.replace("[net]", "[convolutional]", 1), "starts with [net]"),
    "empty": ("", "empty cfg"),
    "route size mismatch": (TINY.replace("[maxpool]\nsize=2\nstride=1",
                                         "[maxpool]\nsize=2\nstride=2\n\n[route]\nlayers=-1,-2"),
                            "differ in spatial size"),
}


@pytest.mark.parametrize("case", list(BAD_CFGS), ids=str)
def test_bad_cfg_is_one_clear_line_with_file_and_line(case, tmp_path):
    text, words = BAD_CFGS[case]
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2, result.output
    assert words in result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith(f"error: {path}:") and "Traceback" not in line


def test_binary_junk_is_rejected(tmp_path):
    path = tmp_path / "junk.cfg"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CfgError, match="binary data"):
        load_graph(path)


def _mutations(text: str, rng: random.Random):
    lines = text.splitlines()
    index = rng.randrange(len(lines))
    choice = rng.randrange(7)
    if choice == 0:
        del lines[index]
    elif choice == 1:
        lines[index] = lines[index].replace("=", "", 1)
    elif choice == 2:
        lines[index] = lines[index][: rng.randrange(len(lines[index]) + 1)]
    elif choice == 3:
        lines.insert(index, lines[rng.randrange(len(lines))])
    elif choice == 4:
        lines[index] = lines[index].split("=")[0] + "=" + rng.choice(["-1", "0", "x", "1e9", "-99", "", "[]", "3,"])
    elif choice == 5:
        lines[index] = "[" + rng.choice(["foo", "route", "shortcut", "yolo", "net", "upsample"]) + "]"
    else:
        lines[index] = "".join(rng.sample(lines[index], len(lines[index])))
    return "\n".join(lines)


FUZZED = [own_cfg("tiny-maxpool"), own_cfg("csp-newcoords"), own_cfg("attention"), shipped_cfg("demo-tiny")]
FUZZED_CORPUS = [corpus_cfg(name) for name in ("yolov4-tiny", "yolov3-tiny", "yolov4-csp")]


@pytest.mark.parametrize("paths", [pytest.param(FUZZED, id="own"), with_corpus(FUZZED_CORPUS, id="corpus")])
def test_fuzzed_real_cfgs_give_only_clean_errors(paths):
    rng = random.Random(1234)
    sources = [path.read_text() for path in paths]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        text = rng.choice(sources)
        for _ in range(rng.randint(1, 3)):
            text = _mutations(text, rng)
        try:
            graph = graph_of(text, size=(128, 128))
        except PruneyoloError as error:
            message = str(error)
            assert message.startswith("test.cfg:") and "\n" not in message, message
            outcomes["error"] += 1
        else:
            assert graph.nodes and all(min(node.out_shape) >= 1 for node in graph.nodes)
            outcomes["ok"] += 1
    assert outcomes["error"] > 100 and outcomes["ok"] > 20, outcomes


def test_weights_both_header_versions_round_trip_and_size_errors(tmp_path):
    graph = graph_of(TINY)
    weights = random_weights(graph, 3)
    for minor, header in ((2, 20), (1, 16)):
        weights.minor = minor
        path = tmp_path / f"v{minor}.weights"
        write_weights(path, graph, weights)
        data = path.read_bytes()
        assert len(data) == header + 4 * (8 * 4 + 8 * 27 + 18 + 18 * 8)
        again = read_weights(path, graph)
        write_weights(tmp_path / "again.weights", graph, again)
        assert (tmp_path / "again.weights").read_bytes() == data
    short = tmp_path / "short.weights"
    short.write_bytes(data[:-10])
    with pytest.raises(WeightsError, match=r"ran out .* layer 2 .* needs \d+ bytes, the file has"):
        read_weights(short, graph)
    long = tmp_path / "long.weights"
    long.write_bytes(data + b"\0" * 8)
    with pytest.raises(WeightsError, match="8 bytes left over"):
        read_weights(long, graph)
