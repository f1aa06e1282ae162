"""Writing files atomically: one writer for checkpoints and saved results.

A file is written to a temporary file in the same folder, flushed and
fsync'ed, then moved over the target with ``os.replace`` (atomic on POSIX
and Windows), and the folder is fsync'ed so the rename survives a power
loss. A crash at any instant leaves the previous file or the new one, never
a half-written file; a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = ["atomic_path", "atomic_write", "fsync_dir"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside ``path``; on success it replaces ``path`` durably.

    For writers that want a file name (``keras.Model.save``): write the file
    at the yielded path inside the ``with`` block.

    Args:
        path: the file to write.
        suffix: the temporary file's suffix (Keras wants ``.keras``).

    Examples:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> with atomic_path(target) as tmp:
        ...     _ = open(tmp, "w").write("hello")
        >>> open(target).read()
        'hello'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=".tmp-", suffix=suffix or "-" + os.path.basename(path), dir=folder
    )
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # the writer may have closed its own handle
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Writes a file atomically: ``write`` gets the open binary temporary file.

    A crash (or an exception raised by ``write``) leaves the previous file at
    ``path`` untouched and no temporary file behind.

    Examples:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> atomic_write(target, lambda f: f.write(b"hello"))
        >>> open(target).read()
        'hello'
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()


def fsync_dir(folder: str) -> None:
    """Makes a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
