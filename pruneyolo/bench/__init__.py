"""Speed tables against the machine's measured peak."""

LIKE_TOLERANCE = 0.03  # "as fast as" another model (`prune --target-like`): within 3%; two equal IRs timed in turns
# differ by up to 1.6%
