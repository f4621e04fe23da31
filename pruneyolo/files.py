"""Writing files safely: staged in a temporary sibling, then renamed into place."""

from __future__ import annotations

import io
import os
import secrets
import stat
from pathlib import Path

from pruneyolo.errors import PruneyoloError

PERMISSIONS = 0o777  # what a written file keeps of an existing file's mode: no setuid, setgid or sticky bit


def _create_sibling(path: Path) -> tuple[int, Path]:
    """A new temporary file beside `path`, open for writing, mode 0666 less the umask (mkstemp would give 0600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _existing_mode(path: Path) -> int | None:
    """The permission bits of the regular file at `path` (None if there is none); anything else that is there
    (a FIFO, a device, a directory, a socket), which renaming over would replace, is one PruneyoloError."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PruneyoloError(f"{path}: cannot write it ({exc.strerror})") from None
    if not stat.S_ISREG(found.st_mode):
        kind = ("a directory" if stat.S_ISDIR(found.st_mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(found.st_mode)
                else "a device" if stat.S_ISCHR(found.st_mode) or stat.S_ISBLK(found.st_mode) else "not a regular file")
        raise PruneyoloError(f"{path}: is {kind}, which pruneyolo never replaces; write to a regular file's path")
    return stat.S_IMODE(found.st_mode) & PERMISSIONS


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a file via a temporary sibling and rename, so a failure never leaves half a file.

    The file gets the mode open() would give it: an existing file's permissions (without setuid, setgid or
    sticky bits), else 0666 less the umask. A FIFO, device or directory at `path` is refused, not replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    mode = _existing_mode(path)
    fd, tmp = _create_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_png(path: str | os.PathLike, figure, dpi: int = 110) -> Path:
    """A matplotlib figure written atomically as PNG, then closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    atomic_write(path, buffer.getvalue())
    return Path(path)
