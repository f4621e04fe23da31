"""User-facing errors: each renders as one line that says what is wrong, where, and what to do."""


class PruneyoloError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting with status 2."""


class ArgumentError(PruneyoloError):
    """A bad value of an argument (or a clash of alternatives), named as the library calls it (`layer_keep`);
    the CLI names the option instead (`--layer-keep`)."""

    def __init__(self, arguments: str | tuple[str, ...], problem: str):
        self.arguments = (arguments,) if isinstance(arguments, str) else arguments
        self.problem = problem
        super().__init__(self.naming(lambda argument: argument))

    def naming(self, name_of) -> str:
        """The message with each argument as `name_of` names it."""
        return f"{' or '.join(map(name_of, self.arguments))} {self.problem}"


class CfgError(PruneyoloError):
    """A Darknet cfg that cannot be read, located by file and line."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{self.path}:{line}: {message}")


class WeightsError(PruneyoloError):
    """A Darknet .weights file that does not fit its cfg, located by byte offset."""
