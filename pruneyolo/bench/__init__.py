"""Speed tables against the machine's measured peak."""
