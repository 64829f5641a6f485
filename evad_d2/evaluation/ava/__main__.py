"""``python -m evad_d2.evaluation.ava``: see :func:`evad_d2.evaluation.ava.cli.main`."""
import sys

from .cli import main

sys.exit(main())
