"""Moved to :mod:`evad_d2.testing`; this alias goes once the last new test file imports from there."""
from evad_d2.testing import write_text  # noqa: F401
