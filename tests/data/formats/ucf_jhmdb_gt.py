"""Moved to :mod:`evad_d2.testing`; this alias goes once the last new test file imports from there."""
from evad_d2.testing import Py2Pickler, small_ucf_gt as small_gt, ucf_tube as tube, write_pickle as write_gt  # noqa: F401
