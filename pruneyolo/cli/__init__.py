"""The `pruneyolo` command line, one module per command group."""
