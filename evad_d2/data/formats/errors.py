"""The error every file-format reader raises: its message starts with ``file:line``."""
from typing import Optional

__all__ = ["FileFormatError"]


class FileFormatError(ValueError):
    """A malformed file; the message is ``"{path}:{line}: {message}"`` (``"{path}: ..."`` where the
    line is not known), and ``path`` / ``line`` are kept for callers that report them."""

    def __init__(self, path: str, line: Optional[int], message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
