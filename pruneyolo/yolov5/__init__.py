"""YOLOv5 checkpoints (.pt, pruned or not) and export.py ONNX files into pruneyolo, without running their code."""
