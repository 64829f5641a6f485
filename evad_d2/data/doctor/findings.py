"""What the doctor's checks return (:class:`Finding`) and read (:class:`RawRow`)."""
import csv
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..formats.ava import TEXT_ENCODING

__all__ = ["Finding", "RawRow", "number", "read_raw_rows"]


@dataclass(frozen=True)
class Finding:
    """One check's result: ``status`` is ``"ok"``, ``"note"`` or ``"problem"``."""

    check: str
    status: str
    message: str
    fix: str = ""


@dataclass(frozen=True)
class RawRow:
    """A CSV row as written: fields that do not parse are None."""

    line: int
    video_id: str
    timestamp: Optional[float]
    box: Optional[Tuple[float, float, float, float]]
    action: Optional[float]


def number(text: str) -> Optional[float]:
    """``float(text)`` if it is a finite number, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_raw_rows(path: str) -> List[RawRow]:
    """Every non-blank row of an AVA CSV, parsed without validation (7+ columns)."""
    rows = []
    with open(path, encoding=TEXT_ENCODING, newline="") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if len(fields) < 2 or not "".join(fields).strip():
                continue
            box = tuple(number(v) for v in fields[2:6]) if len(fields) >= 6 else ()
            action = number(fields[6]) if len(fields) >= 7 and fields[6].strip() else None
            rows.append(RawRow(line, fields[0], number(fields[1]), box if len(box) == 4 and None not in box else None, action))
    return rows


