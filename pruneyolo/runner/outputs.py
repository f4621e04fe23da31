"""Where results go: JSONL lines, annotated video, an OpenCV window, and the drawing they share."""

from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pruneyolo.errors import ArgumentError


class Sink(Protocol):
    """What the pipeline writes each mosaic's results to (files, windows, the live view, Prometheus)."""

    needs_view: bool  # the sink wants the annotated mosaic drawn

    def write(self, result) -> None:
        """Take one pipeline MosaicResult."""

    def close(self) -> None:
        """Flush and release; called once, also after an error."""


def class_colour(cls: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class."""
    r, g, b = colorsys.hsv_to_rgb((cls * 0.618034) % 1.0, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
               labels: list[str]) -> None:
    """Boxes (xyxy in `image` pixels) with 'label score' captions, in place."""
    for (x1, y1, x2, y2), score, cls in zip(np.round(boxes).astype(int), scores, classes, strict=True):
        colour = class_colour(int(cls))
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        label = labels[cls] if cls < len(labels) else str(cls)
        cv2.putText(image, f"{label} {score:.2f}", (x1 + 2, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, colour, 1, cv2.LINE_AA)


def draw_caption(image: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    """Small white-on-black text, in place."""
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    x, y = origin
    cv2.rectangle(image, (x, y), (x + width + 6, y + height + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 3, y + height + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)


def draw_no_signal(tile: np.ndarray, source: str, state: str) -> None:
    """Fill a tile view with a 'NO SIGNAL' card naming the source and its state, in place."""
    tile[...] = 40
    height, width = tile.shape[:2]
    scale = max(0.5, width / 400)
    (text_width, _), _ = cv2.getTextSize("NO SIGNAL", cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.putText(tile, "NO SIGNAL", ((width - text_width) // 2, height // 2), cv2.FONT_HERSHEY_SIMPLEX,
                scale, (0, 0, 255), 2, cv2.LINE_AA)
    draw_caption(tile, f"{source} ({state})"[:60], (4, height // 2 + 12))


def frame_record(result, labels: list[str]) -> dict:
    """One JSONL line: stream, frame index, timestamp, and boxes in source pixels with class and score."""
    dets = result.detections
    return {
        "stream": result.frame.stream, "source": result.source, "frame": result.frame.index,
        "timestamp": round(result.frame.timestamp, 6), "latency_ms": round(1000 * result.latency, 3),
        "width": int(result.frame.image.shape[1]), "height": int(result.frame.image.shape[0]),
        "detections": [{"box": [round(float(v), 2) for v in box], "class": int(cls),
                        "label": labels[cls] if cls < len(labels) else str(cls), "score": round(float(score), 4)}
                       for box, score, cls in zip(dets.boxes, dets.scores, dets.classes, strict=True)],
    }


class JsonlSink:
    """One line per source frame, written in order and flushed per mosaic, so a stop leaves whole lines."""

    needs_view = False

    def __init__(self, path: str, labels: list[str]):
        self.labels = labels
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - open for the whole run

    def write(self, result) -> None:
        self.file.writelines(json.dumps(frame_record(f, self.labels), separators=(",", ":")) + "\n"
                             for f in result.frames)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def video_writer(path: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An OpenCV writer picking the codec from the extension; raises PruneyoloError if it cannot open."""
    fourcc = {".avi": "MJPG", ".mkv": "MJPG"}.get(Path(path).suffix.lower(), "mp4v")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise ArgumentError("save_video", f"{path}: OpenCV cannot write this file (try .mp4 or .avi)")
    return writer


class VideoSink:
    """The annotated mosaic as a video, or one video per stream when the path holds `{stream}`."""

    def __init__(self, path: str, fps: float, labels: list[str]):
        self.path, self.fps, self.labels = path, fps, labels
        self.per_stream = "{stream}" in path
        self.needs_view = not self.per_stream
        self.writers: dict[int, tuple[cv2.VideoWriter, tuple[int, int]]] = {}

    def _write(self, key: int, path: str, image: np.ndarray) -> None:
        size = (image.shape[1], image.shape[0])
        if key not in self.writers:
            self.writers[key] = (video_writer(path, self.fps, size), size)
        writer, first_size = self.writers[key]
        writer.write(image if size == first_size else cv2.resize(image, first_size))

    def write(self, result) -> None:
        if not self.per_stream:
            self._write(result.group, self.path.replace("{group}", str(result.group)), result.view)
            return
        for frame_result in result.frames:
            image = frame_result.frame.image.copy()
            dets = frame_result.detections
            draw_boxes(image, dets.boxes, dets.scores, dets.classes, self.labels)
            stream = frame_result.frame.stream
            self._write(stream, self.path.format(stream=stream), image)

    def close(self) -> None:
        for writer, _ in self.writers.values():
            writer.release()
        self.writers.clear()


class WindowSink:
    """`--show`: the annotated mosaic in an OpenCV window; closing it or pressing q/Esc stops the run."""

    needs_view = True

    def __init__(self, stop):
        if os.name != "nt" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ArgumentError("show", "needs a display (DISPLAY is not set); serve the live view to a browser "
                                "instead")
        try:
            cv2.namedWindow("pruneyolo", cv2.WINDOW_NORMAL)
        except cv2.error:
            raise ArgumentError("show", "needs OpenCV's GUI support, which opencv-python-headless lacks; serve the "
                                "live view to a browser instead") from None
        self.stop = stop

    def write(self, result) -> None:
        cv2.imshow("pruneyolo", result.view)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop.set()

    def close(self) -> None:
        cv2.destroyAllWindows()
