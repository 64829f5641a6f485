from .backbone import *  # noqa: F401,F403
