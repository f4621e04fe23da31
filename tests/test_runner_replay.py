"""The replay source: the first N frames of a source read once and served in a cycle from memory; a run
over it accounts for every frame served in its JSONL and summary."""

import json
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from runner_support import cell_centre_scene

from pruneyolo.cli.main import main
from pruneyolo.data.synth import SceneStream
from pruneyolo.errors import PruneyoloError
from pruneyolo.runner.sources import DEFAULT_FRAMES, Capture, CapturePolicy, ReplayReader, parse_source


def test_replay_spec_takes_a_trailing_frames_option_and_wraps_any_source(tmp_path):
    spec = parse_source("replay:synthetic:seed=1,size=64x48,frames=5")
    assert (spec.kind, spec.target, spec.options["frames"]) == ("replay", "synthetic:seed=1,size=64x48", 5)
    assert spec.options["source"].options == {"seed": 1, "width": 64, "height": 48}
    assert not spec.live  # waits for room: a replay never drops a frame while running
    video = parse_source(f"replay:{tmp_path / 'clip.mp4'}")
    assert (video.options["source"].kind, video.options["frames"]) == ("video", DEFAULT_FRAMES)


@pytest.mark.parametrize("text, complaint", [("replay:", "needs a source"), ("replay:0,frames=0", "frames must"),
                                             ("replay:a.mp4,frames=x", "frames must"),
                                             ("replay:replay:a.mp4", "needs a source")])
def test_bad_replay_spec_is_one_line_error(text, complaint):
    with pytest.raises(PruneyoloError, match=complaint) as error:
        parse_source(text)
    assert "\n" not in str(error.value)


def test_replay_serves_the_first_frames_in_a_cycle_read_only():
    reader = ReplayReader(parse_source("replay:synthetic:seed=2,size=64x48,frames=3"), stream=0)
    scene = SceneStream(seed=2, width=64, height=48)
    originals = [scene.read()[0] for _ in range(3)]
    served = [reader.read() for _ in range(7)]
    for index, frame in enumerate(served):
        np.testing.assert_array_equal(frame, originals[index % 3])
    assert not np.array_equal(originals[0], originals[1])
    assert not served[0].flags.writeable


def test_replay_of_a_short_source_cycles_what_it_has(tmp_path):
    for index in range(2):
        cv2.imwrite(str(tmp_path / f"{index}.png"), np.full((20, 30, 3), 50 * index, np.uint8))
    reader = ReplayReader(parse_source(f"replay:{tmp_path},frames=5"), stream=0)
    assert [int(reader.read()[0, 0, 0]) for _ in range(5)] == [0, 50, 0, 50, 0]


def test_run_over_replay_has_every_served_frame_and_repeats_its_detections(tiny_ir, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    centres = [(90, 60), (150, 120), (90, 120)]  # on cell centres once letterboxed
    for index, centre in enumerate(centres):
        cv2.imwrite(str(folder / f"{index}.png"), cell_centre_scene(240, 180, centre, 80))
    jsonl, summary = tmp_path / "d.jsonl", tmp_path / "s.json"
    sources = ["--source", f"replay:{folder},frames=3", "--source", "replay:synthetic:seed=1,size=64x48,frames=2"]
    result = CliRunner().invoke(main, ["run", str(tiny_ir), *sources, "--max-frames", "7", "--jsonl", str(jsonl),
                                       "--summary-json", str(summary), "--quiet", "--nireq", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(summary.read_text())
    assert [(s["read"], s["frames"], s["dropped"], s["state"]) for s in report["streams"]] == [(7, 7, 0, "ended")] * 2
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    boxes = {r["frame"]: [d["box"] for d in r["detections"]] for r in records if r["stream"] == 0}
    assert sorted(boxes) == list(range(7))
    for index in range(7):
        assert boxes[index] == boxes[index % 3]
    for index, (x, y) in enumerate(centres):  # each replayed frame's own square, in its own pixels
        assert any(abs((b[0] + b[2]) / 2 - x) < 8 and abs((b[1] + b[3]) / 2 - y) < 8 for b in boxes[index])
    assert report["steady_inferences_per_s"] > 0
    assert 0 <= report["python_cpu_ms_per_inference"] < report["cpu_ms_per_inference"]


def test_replayed_frames_carry_their_place_in_the_cycle_as_key():
    capture = Capture(0, parse_source("replay:synthetic:seed=2,size=64x48,frames=3"), CapturePolicy(max_frames=7))
    capture.start()
    frames = []
    while len(frames) < 7:
        frame = capture.take()
        if frame is not None:
            frames.append(frame)
        else:
            time.sleep(0.001)
    capture.join(5)
    assert [frame.key for frame in frames] == [(1, k % 3) for k in range(7)]
    for frame in frames[3:]:
        assert frame.image is frames[frame.key[1]].image
    live = Capture(1, parse_source("synthetic:seed=2,size=64x48"), CapturePolicy(max_frames=1))
    live.start()
    live.join(5)
    assert live.take().key is None
