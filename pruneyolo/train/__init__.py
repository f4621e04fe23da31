"""Training (with sparsity on the BatchNorm gammas) and evaluation (mAP)."""
