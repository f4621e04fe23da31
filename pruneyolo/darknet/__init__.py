"""Darknet cfg text -> typed graph with shapes, parameters and BFLOPs; .weights files; the inspect summary."""
