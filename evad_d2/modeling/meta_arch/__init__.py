from .evad import EVAD

__all__ = ["EVAD"]
