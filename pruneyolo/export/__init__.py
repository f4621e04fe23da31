"""OpenVINO IR and ONNX: conversion, 2022.3 op versions, precisions, INT8, model server repositories."""
