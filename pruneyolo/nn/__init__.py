"""The typed graph as PyTorch: darknet layers, the in-process module builder, the generated model file."""
