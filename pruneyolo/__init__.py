"""pruneyolo: prune Darknet YOLO models and deploy any pruned cfg to OpenVINO."""

__version__ = "0.1.0"
