"""Moved to :mod:`evad_d2.testing`; this alias goes once the last new test file imports from there."""
from evad_d2.testing import CODED_H as H, CODED_W as W, VFR_MS, coded_frame, decode_index, write_video  # noqa: F401
