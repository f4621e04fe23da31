"""Channel and residual-block pruning by BatchNorm |gamma|, with its tables and plots."""
