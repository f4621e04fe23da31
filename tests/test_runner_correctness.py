"""Known objects at known places in 5 streams (non-square, portrait, upscaled; 2 mosaics a round) come back
on the right stream at the right source pixels, through `pruneyolo run` on IRs with known behaviour."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from runner_support import cell_centre_scene, make_ir

from pruneyolo.cli.main import main

BLUE, RED = (255, 0, 0), (0, 0, 255)

# A 256x256 IR in a 2x2 layout: 128 px tiles, 16 px cells, 24 px boxes. Each object is a square covering one
# cell of the mosaic, centred on it; expected boxes are worked out by hand from the letterbox (scale, padding).
STREAMS = [
    # source size, object centre and side in source px, colour, expected class, expected xyxy box
    ((320, 180), (100, 70), 60, BLUE, 0, (70, 40, 130, 100)),  # scale 0.4, pad_y 28: cell (40, 56)
    ((180, 320), (70, 220), 60, RED, 1, (40, 190, 100, 250)),  # scale 0.4, pad_x 28: cell (56, 88)
    ((640, 480), (520, 280), 120, BLUE, 0, (460, 220, 580, 340)),  # scale 0.2, pad_y 16: cell (104, 72)
    ((100, 100), (18.75, 93.75), 18.75, RED, 1, (9.375, 84.375, 28.125, 100)),  # x1.28, clipped at the bottom
    ((320, 180), (100, 70), 60, RED, 1, (70, 40, 130, 100)),  # stream 4: tile 0 of the second mosaic
]


@pytest.mark.parametrize("heads_mode", ["decoded", "raw"])
def test_each_detection_comes_back_on_its_stream_at_source_pixels(tmp_path, heads_mode):
    xml = make_ir(tmp_path / "model.xml", 256, 256, stride=16, anchor=(24, 24), heads_mode=heads_mode)
    sources = []
    for index, (size, centre, side, colour, _, _) in enumerate(STREAMS):
        path = tmp_path / f"stream{index}.png"
        cv2.imwrite(str(path), cell_centre_scene(*size, centre, side, colour))
        sources += ["--source", str(path)]
    jsonl = tmp_path / "dets.jsonl"
    result = CliRunner().invoke(main, ["run", str(xml), *sources, "--layout", "2x2", "--jsonl", str(jsonl),
                                       "--quiet", "--conf", "0.5"])
    assert result.exit_code == 0, result.output
    records = {r["stream"]: r for r in map(json.loads, jsonl.read_text().splitlines())}
    assert sorted(records) == list(range(len(STREAMS)))
    for stream, (size, _, _, _, cls, box) in enumerate(STREAMS):
        record = records[stream]
        assert (record["width"], record["height"], record["frame"]) == (*size, 0)
        assert len(record["detections"]) == 1, (stream, record)
        found = record["detections"][0]
        assert found["class"] == cls, stream
        np.testing.assert_allclose(found["box"], box, atol=2, err_msg=f"stream {stream}")
