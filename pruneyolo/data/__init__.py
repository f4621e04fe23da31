"""Synthetic scenes and datasets, and reading YOLO-txt datasets."""
