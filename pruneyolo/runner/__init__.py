"""The multi-stream mosaic runner: sources, adapter, pipeline, sinks, live view and metrics."""
