"""Writing files so that a reader never sees a partial one.

:func:`atomic_write` writes to a temporary file in the target's folder, flushes and fsyncs it,
renames it over the target with ``os.replace`` (atomic on POSIX and Windows) and fsyncs the
folder, so that after a crash, a kill -9, a full disk or Ctrl-C the target is either the old file
(or absent) or the complete new one. On an exception (``KeyboardInterrupt`` included) the temporary
is removed and the exception propagates. After a kill -9 the temporary stays behind under a hidden
name (``.NAME.<random>.tmp``) that never matches a checkpoint or result pattern;
:func:`remove_stale_temporaries` deletes such leftovers.
"""

import contextlib
import glob
import os
import secrets
from typing import IO, Iterator, List

__all__ = ["atomic_write", "remove_stale_temporaries", "temporary_pattern"]

_SUFFIX = ".tmp"


def temporary_pattern(path: str) -> str:
    """The glob pattern of the temporaries :func:`atomic_write` makes for ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(glob.escape(folder), "." + glob.escape(name) + ".*" + _SUFFIX)


def _open_temporary(path: str, mode: str, encoding: str, newline) -> IO:
    """A new hidden temporary next to ``path``, open for writing (its ``name`` is its path)."""
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}{_SUFFIX}")
        try:
            # "x": create, never overwrite; permissions from the umask, as for open(path, "w").
            if mode == "wb":
                return open(tmp, "xb")
            return open(tmp, "x", encoding=encoding, newline=newline)
        except FileExistsError:  # pragma: no cover - 32 random bits collide
            continue


def _fsync_folder(folder: str) -> None:
    if os.name != "posix":  # pragma: no cover - Windows cannot open a folder for fsync
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", *, encoding: str = "utf-8", newline=None) -> Iterator[IO]:
    """Context manager: a file object whose contents replace ``path`` when the block succeeds.

    Example::

        with atomic_write("out/model_final.pth") as f:
            torch.save(data, f)

    Args:
        path: the file to write (its folder must exist).
        mode: ``"wb"`` or ``"w"`` (text, with ``encoding`` and ``newline`` as for :func:`open`).

    Raises:
        Whatever the block or the file system raises (e.g. ``OSError`` on a full disk); the
        temporary is removed first and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    f = _open_temporary(path, mode, encoding, newline)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(f.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f.name)
        raise
    _fsync_folder(os.path.dirname(os.path.abspath(path)))


def remove_stale_temporaries(path: str) -> List[str]:
    """Delete temporaries that writes of ``path`` left behind (a process killed mid-write).

    Call it only where no other process writes ``path`` at the same time (e.g. checkpoints, which
    only the main process writes). Returns the removed paths.
    """
    removed = []
    for tmp in glob.glob(temporary_pattern(path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
            removed.append(tmp)
    return removed
