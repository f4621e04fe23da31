"""OpenVINO IR and ONNX: conversion, 2022.3 op versions, precisions, INT8, model server repositories."""

SYNTHETIC = "synthetic"  # the int8 calibration source that renders scenes instead of reading image files
