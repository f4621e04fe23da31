"""`replay:SOURCE[,frames=N]`: the first N frames of any source, read once into memory, then served in a
cycle at no capture cost, so a run measures the runner and the device alone.

The frames are read when the stream opens (its state stays `connecting` meanwhile), made read-only, and
handed out again and again until --max-frames, --duration or a stop; frame index k shows frame k % N.
"""

from __future__ import annotations

import numpy as np

from pruneyolo.errors import PruneyoloError
from pruneyolo.runner.sources import SourceError, SourceSpec, open_reader, parse_source

DEFAULT_FRAMES = 30


def parse_replay(text: str) -> SourceSpec:
    """`replay:synthetic:seed=1,size=640x480,frames=8` -> a replay spec over the inner source.

    A trailing `,frames=N` belongs to the replay (default DEFAULT_FRAMES); the rest is any `--source`.
    """
    inner, frames = text.split(":", 1)[1], DEFAULT_FRAMES
    head, comma, last = inner.rpartition(",")
    if comma and last.startswith("frames="):
        inner, value = head, last.partition("=")[2]
        if not value.isdigit() or int(value) < 1:
            raise PruneyoloError(f"--source {text}: frames must be a whole number >= 1, got {value!r}")
        frames = int(value)
    if not inner or inner.startswith("replay:"):
        raise PruneyoloError(f"--source {text}: replay needs a source to read, e.g. "
                             f"replay:synthetic:seed=1,size=640x480,frames=30")
    return SourceSpec(text, "replay", inner, {"frames": frames, "source": parse_source(inner)})


class ReplayReader:
    """Frames read once from the inner source, served in a cycle; never ends by itself."""

    def __init__(self, spec: SourceSpec, stream: int):
        self.frames = read_frames(spec.options["source"], stream, spec.options["frames"])
        if not self.frames:
            raise SourceError(f"{spec.text}: {spec.target} gave no frames")
        self.served = 0

    def pace(self) -> None:
        pass

    def read(self) -> np.ndarray:
        frame = self.frames[self.served % len(self.frames)]
        self.served += 1
        return frame

    def close(self) -> None:
        pass


def read_frames(spec: SourceSpec, stream: int, count: int) -> list[np.ndarray]:
    """Up to `count` frames of `spec` (fewer if it ends first), each read-only."""
    reader = open_reader(spec, stream)
    frames = []
    try:
        while len(frames) < count:
            reader.pace()
            image = reader.read()
            if image is None:
                break
            image = np.ascontiguousarray(image)
            image.flags.writeable = False
            frames.append(image)
    finally:
        reader.close()
    return frames
