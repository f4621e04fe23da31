"""What a detector's outputs mean: IR metadata, decode, boxes and NMS, letterbox and mosaic geometry."""

# An IR's output layouts: 'decoded' one [1, N, 5+C] output of rows; 'raw' one [1, A*(5+C), h, w] per head;
# 'scores' one [1, 4+C, N] output (Ultralytics' layout)
HEADS_MODES = ("decoded", "raw", "scores")
CONFIDENCE_THRESHOLD = 0.25  # `pruneyolo run`'s defaults, also written into the IR for model_api
IOU_THRESHOLD = 0.45
