#!/usr/bin/env python
"""Convert an official EVAD release checkpoint (MCG-NJU/EVAD, PySlowFast layout) to evad_d2.

Example:
    python tools/convert_official_evad.py EVAD_ViT_B_KTP.pth output/evad_vitb_rho0.7_official.pth \\
        --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml

Every official tensor is mapped (or the conversion fails, naming the keys) and checked against the
model of ``--config-file`` plus the file's stored settings (built on the meta device); the last
lines print the config overrides that reproduce the official outputs, among them
``MODEL.EVAD.OFFICIAL_MODE True``. What it does: evad_d2.checkpoint.convert_official.
"""

import argparse
import os
import sys

from detectron2.utils.logger import setup_logger

from evad_d2.checkpoint.convert_official import convert_official_checkpoint

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Base-EVAD.yaml")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="official EVAD .pth")
    p.add_argument("output", help="evad_d2 .pth to write")
    p.add_argument(
        "--config-file",
        default=DEFAULT_CONFIG,
        help="evad_d2 config the converted weights are checked against "
        "(the official file's settings are merged on top)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip building the model to check keys and shapes")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="further config overrides for the check")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    return convert_official_checkpoint(
        args.input, args.output, config_file=args.config_file, opts=args.opts, verify=not args.no_verify
    )


if __name__ == "__main__":
    sys.exit(main())
