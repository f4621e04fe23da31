"""User-facing errors: each renders as one line that says what is wrong, where, and what to do."""

import reprlib
import unicodedata

UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})  # controls, format (bidi), separators


def show(value) -> str:
    """A value from a file, shortened for a message: long strings, big containers and deep nesting cut, and an
    integer too long to write in decimal (Python refuses) given by its size."""
    try:
        return reprlib.repr(value)
    except ValueError:
        return f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else \
            f"<a {type(value).__name__} holding an integer too long to print>"


def printable(text: str) -> str:
    """`text` with every control or format character (newlines, ANSI escapes, bidi overrides) written as an
    escape, so that text from a file prints as itself on one terminal line."""
    return "".join(ch if unicodedata.category(ch) not in UNPRINTABLE else ascii(ch)[1:-1] for ch in str(text))


class PruneyoloError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting with status 2."""


class ArgumentError(PruneyoloError):
    """A bad value of an argument (or a clash of alternatives), named as the library calls it (`layer_keep`);
    the CLI names the option instead (`--layer-keep`). Other arguments the problem suggests are written
    `{name}` in it and listed in `mentions`, so that they are named the same way."""

    def __init__(self, arguments: str | tuple[str, ...], problem: str, mentions: tuple[str, ...] = ()):
        self.arguments = (arguments,) if isinstance(arguments, str) else arguments
        self.problem, self.mentions = problem, mentions
        super().__init__(self.naming(lambda argument: argument))

    def naming(self, name_of) -> str:
        """The message with each argument as `name_of` names it."""
        problem = self.problem
        for mention in self.mentions:
            problem = problem.replace(f"{{{mention}}}", name_of(mention))
        return f"{' or '.join(map(name_of, self.arguments))} {problem}"


class CfgError(PruneyoloError):
    """A Darknet cfg that cannot be read, located by file and line."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{self.path}:{line}: {message}")


class WeightsError(PruneyoloError):
    """A Darknet .weights file that does not fit its cfg, located by byte offset."""
