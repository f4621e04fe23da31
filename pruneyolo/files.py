"""Writing files safely: staged in a temporary sibling, then renamed into place."""

from __future__ import annotations

import io
import os
import secrets
import stat
from pathlib import Path


def _create_sibling(path: Path) -> tuple[int, Path]:
    """A new temporary file beside `path`, open for writing, mode 0666 less the umask (mkstemp would give 0600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a file via a temporary sibling and rename, so a failure never leaves half a file.

    The file gets the mode open() would give it: an existing file's own, else 0666 less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else None
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
