"""What a detector's outputs mean: IR metadata, decode, boxes and NMS, letterbox and mosaic geometry."""
