"""`run`, `devices` and `score`: thin shells that wire sources, backend, pipeline and sinks, and score a run."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading

import click

from pruneyolo.cli.options import INFERENCE_TYPE
from pruneyolo.detect import CONFIDENCE_THRESHOLD, IOU_THRESHOLD
from pruneyolo.errors import printable
from pruneyolo.modelfile import require_ir
from pruneyolo.runner.backend import KSERVE_INFLIGHT


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGINT / SIGTERM set `stop` (the run then finishes cleanly) while inside the block."""
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


SOME_FAILED, ALL_FAILED = 3, 4  # run's exit statuses when sources failed (2: a usage or input error)
LOG_STATUS_EVERY = 10.0  # seconds between status lines when stderr is not a terminal


def failed_streams(snapshot: dict) -> list[str]:
    """'stream N (source): why' for each stream that failed or delivered no frame."""
    return [f"stream {s['stream']} ({s['source']}): {s.get('error') or 'no frames, ' + s.get('state', 'ended')}"
            for s in snapshot["streams"] if s.get("state") == "failed" or not s["frames"]]


def exit_status(snapshot: dict) -> tuple[int, str]:
    """(0, '') when every source delivered frames and none failed; else SOME_FAILED or ALL_FAILED and one line."""
    failed = failed_streams(snapshot)
    if not failed:
        return 0, ""
    if len(failed) == len(snapshot["streams"]):
        return ALL_FAILED, f"error: every source failed: {'; '.join(failed)}"
    return SOME_FAILED, f"warning: {len(failed)} of {len(snapshot['streams'])} sources failed: {'; '.join(failed)}"


def given(name: str) -> bool:
    """Whether the running command's option `name` was given on the command line (not its default)."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE


def server_table(servers: list[dict]):
    """Per-server numbers of a run with --backend (a rich Table)."""
    from rich.table import Table

    table = Table(title="servers")
    for column in ("server", "state", "requests", "errors", "latency ms", "median ms", "last error"):
        table.add_column(column, justify="left" if column in ("server", "state", "last error") else "right")
    for s in servers:
        table.add_row(s["server"], s["state"], str(s["requests"]), str(s["errors"]), f"{s['latency_ms']:.1f}",
                      f"{s['median_ms']:.1f}", s["last_error"])
    return table


def summary_table(snapshot: dict, backend):
    """The end-of-run report (a rich Table): per-stream numbers, then totals, precision and per-stage times."""
    from rich.table import Table

    table = Table(title=f"pruneyolo run: {snapshot['frames']} frames, {snapshot['mosaics']} mosaics in "
                        f"{snapshot['elapsed_s']:.1f} s on {backend.where} ({backend.requests} requests, "
                        f"precision {backend.precision_used})")
    for column in ("stream", "source", "state", "frames", "avg fps", "latency ms", "infer ms", "dropped",
                   "reconnects", "detections"):
        table.add_column(column, justify="left" if column in ("source", "state") else "right")
    for s in snapshot["streams"]:
        table.add_row(str(s["stream"]), s["source"], s["state"] + (f" ({s['error']})" if s["error"] else ""),
                      str(s["frames"]), f"{s['average_fps']:.1f}", f"{s['latency_ms']:.1f}",
                      f"{s['infer_ms']:.1f}", str(s["dropped"]), str(s["reconnects"]), str(s["detections"]))
    stages = ", ".join(f"{k} {v:.2f}" for k, v in snapshot["stage_ms"].items())
    table.caption = (f"{snapshot['inferences_per_s']:.2f} inferences/s, {snapshot['fps']:.2f} frames/s; "
                     f"ms per item: {stages}")
    return table


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--source", "sources", multiple=True, required=True,
              help="Camera index, video file, RTSP/HTTP URL, image, folder, synthetic:[seed=,size=WxH,fps=,objects=] "
                   "(rendered scenes) or replay:SOURCE[,frames=N] (SOURCE's first N frames, held in memory and "
                   "served in a cycle); repeat for more streams.")
@click.option("--layout", help="Tile grid COLSxROWS (default: the smallest square that fits the sources).")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device (see `pruneyolo devices`).")
@click.option("--conf", default=CONFIDENCE_THRESHOLD, show_default=True, type=click.FloatRange(0, 1),
              help="Score threshold.")
@click.option("--iou", default=IOU_THRESHOLD, show_default=True, type=click.FloatRange(0, 1), help="NMS IoU threshold.")
@click.option("--nireq", type=click.IntRange(1),
              help=f"Infer requests (default: the device's optimum); with --backend, requests in flight per "
                   f"server (default {KSERVE_INFLIGHT}).")
@click.option("--hint", type=click.Choice(["throughput", "latency"]), default="throughput", show_default=True)
@click.option("--precision", type=INFERENCE_TYPE, help="Inference precision hint (default: the device's own).")
@click.option("--loop", is_flag=True, help="Restart files, folders and images at their end.")
@click.option("--reconnect", is_flag=True, help="Retry sources that fail or end, with back-off.")
@click.option("--max-frames", type=click.IntRange(1), help="Read at most N frames per stream.")
@click.option("--duration", type=click.FloatRange(0), help="Stop after this many seconds.")
@click.option("--save-video", help="Annotated mosaic video (.mp4/.avi); '{stream}' in the name: one per stream.")
@click.option("--video-fps", default=25.0, show_default=True, help="Frame rate written to --save-video.")
@click.option("--jsonl", type=click.Path(dir_okay=False), help="One JSON line per source frame.")
@click.option("--serve", help="Serve HTTP on HOST:PORT (or PORT on 127.0.0.1): / the live view, /stream.mjpg the "
                               "annotated mosaics, /frame.jpg the latest one, /detections the latest detections "
                               "(JSON), /metrics Prometheus metrics, /metrics.json the live metrics (JSON). No "
                               "authentication, so keep it on loopback unless the network is trusted.")
@click.option("--show", is_flag=True, help="Show the annotated mosaic in a window.")
@click.option("--quiet", is_flag=True, help="No status line (live on a terminal, periodic in a log).")
@click.option("--status-every", default=LOG_STATUS_EVERY, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds between status lines on stderr when it is not a terminal (a log).")
@click.option("--summary-json", type=click.Path(dir_okay=False), help="Write the final metrics as JSON.")
@click.option("--backend", "address", help="Where to infer: openvino: (in process, the default), or KServe v2 gRPC model servers "
                                 "(OpenVINO Model Server, Triton): kserve://HOST:PORT[,HOST:PORT...]/NAME (MODEL.xml "
                                 "then needs no .bin).")
@click.option("--backend-token-file", type=click.Path(dir_okay=False),
              help="Send 'authorization: Bearer <the file's token>' with every call to the servers.")
@click.option("--backend-tls", is_flag=True, help="TLS to the servers (the system's root certificates).")
@click.option("--backend-ca", type=click.Path(dir_okay=False, exists=True),
              help="PEM root certificates for the servers' TLS (implies --backend-tls).")
@click.option("--backend-timeout", default=10.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds any one call to a server may take.")
@click.option("--backend-retry", default=30.0, show_default=True, type=click.FloatRange(1),
              help="Seconds without any answer from any server after a failure before the run gives up (longer "
                   "than one inference takes).")
def run(model, sources, layout, conf, iou, loop, reconnect, max_frames, duration, save_video, video_fps, jsonl, serve,
        show, quiet, status_every, summary_json, address, **options):
    """Run MODEL.xml on one or more sources tiled into mosaics; report per-stream detections and metrics.

    Exit status: 0 when every source delivered frames, 3 when some failed, 4 when all did, 2 on a bad argument."""
    require_ir(model, need_bin=not (address or "").startswith("kserve"))
    import cv2
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from pruneyolo.detect.mosaic import make_layout
    from pruneyolo.runner.backend import open_backend
    from pruneyolo.runner.metrics import PeriodicStatus, status_line
    from pruneyolo.runner.outputs import JsonlSink, VideoSink, WindowSink
    from pruneyolo.runner.pipeline import Pipeline, RunOptions
    from pruneyolo.runner.prometheus import PrometheusMetrics
    from pruneyolo.runner.server import LiveState, ViewerServer
    from pruneyolo.runner.sources import CapturePolicy, parse_source

    cv2.setNumThreads(1)  # its pool only contends with inference: a 640x480 letterbox cost 1.0 ms of CPU, not 0.65
    specs = [parse_source(s) for s in sources]
    backend = open_backend(model, address, options, [name for name in options if given(name)])
    stop = threading.Event()
    labels = backend.info.labels
    sinks, listeners, server = [], [], None
    console = Console(stderr=True)
    if backend.info.random_seed is not None:
        click.echo(f"warning: {model} was converted with random weights (seed {backend.info.random_seed}), not a "
                   "trained model: its detections are noise", err=True)
    try:
        grid = make_layout(layout, len(specs), *backend.input_size)
        if jsonl:
            sinks.append(JsonlSink(jsonl, labels))
        if save_video:
            sinks.append(VideoSink(save_video, video_fps, labels))
        if show:
            sinks.append(WindowSink(stop))
        if serve:
            state, metrics = LiveState(labels, len(specs)), PrometheusMetrics([s.text for s in specs], labels)
            server = ViewerServer(serve, state, metrics)
            sinks.extend((state, metrics))
            listeners.extend((state.publish, metrics.publish))
            console.print(f"serving {server.url}")
        live = Live(console=console, auto_refresh=False, transient=True) if console.is_terminal and not quiet \
            else contextlib.nullcontext()
        if console.is_terminal and not quiet:
            listeners.append(lambda snap: live.update(Text(status_line(snap)), refresh=True))
        elif not quiet:
            listeners.append(PeriodicStatus(lambda line: click.echo(line, err=True), status_every))
        pipeline = Pipeline(backend, specs, CapturePolicy(loop=loop, reconnect=reconnect, max_frames=max_frames),
                            grid, sinks, RunOptions(conf=conf, iou=iou, duration=duration), listeners)
        if serve:
            metrics.follow(pipeline.captures, backend.server_stats)
        with stop_on_signals(stop), live:
            snapshot = pipeline.run(stop)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    finally:
        if server:
            server.close()
        backend.close()
    snapshot.update(device=backend.where, precision=backend.precision_used, requests=backend.requests,
                    layout=f"{grid.cols}x{grid.rows}", input=list(backend.input_size))
    if summary_json:
        with open(summary_json, "w", encoding="utf-8") as file:
            json.dump(snapshot, file, indent=1)
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a log file gets the whole table, not 80 squeezed columns
    out.print(summary_table(snapshot, backend))
    if snapshot.get("servers"):
        out.print(server_table(snapshot["servers"]))
    status, line = exit_status(snapshot)
    if status:
        click.echo(printable(line), err=True)
        sys.exit(status)


@click.command()
def devices():
    """List the OpenVINO devices available here, with their main properties."""
    import openvino as ov

    from pruneyolo.runner.adapter import device_properties

    core = ov.Core()
    click.echo(f"OpenVINO {ov.__version__}")
    for device in core.available_devices:
        click.echo(device)
        for name, value in device_properties(core, device).items():
            click.echo(f"  {name}: {value}")


@click.command()
@click.argument("jsonl", type=click.Path(dir_okay=False, exists=True))
@click.option("--source", "sources", multiple=True, required=True,
              help="The run's synthetic --source values, in the same order.")
def score(jsonl, sources):
    """Score a `pruneyolo run` JSONL of synthetic sources against the scenes' ground truth."""
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from pruneyolo.runner.score import score_run

    with tempfile.TemporaryDirectory() as workdir:
        scores = score_run(jsonl, list(sources), workdir)
    table = Table(title="detections vs synthetic ground truth (IoU 0.5; P/R at score >= 0.25)")
    for column in ("stream", "frames", "P", "R", "mAP50", "mAP50-95"):
        table.add_column(column, justify="right")
    for s in scores:
        table.add_row(str(s.stream), str(s.frames), f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.map50:.3f}",
                      f"{s.map50_95:.3f}")
    Console().print(table)
