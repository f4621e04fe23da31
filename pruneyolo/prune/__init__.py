"""Channel and residual-block pruning by BatchNorm |gamma|, with its tables and plots."""

DEFAULT_ROUND = 4  # `prune --round`: what measured fastest at this CPU's default precision (bf16); docs/pruning.md
