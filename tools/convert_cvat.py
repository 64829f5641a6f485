#!/usr/bin/env python
"""Convert CVAT video exports ("CVAT for video 1.1" XML) into an AVA-format dataset root.

    python tools/convert_cvat.py clip1.xml clip2.xml --video-dir raw_videos --out datasets/mine --split train
    python tools/convert_cvat.py clip3.xml --video raw_videos/clip3.mp4 --out datasets/mine --split val

Writes annotations/ava_{split}_v2.2.csv, the label map annotations/ava_action_list_v2.2.pbtxt
(reused when it exists, so that splits share ids), frame_lists/{split}.csv and videos/; see
evad_d2/data/convert_cvat.py and datasets/README.md ("Your own classes").
"""
import argparse
import sys

from evad_d2.data.convert_cvat import convert_cvat, cvat_sources
from evad_d2.data.formats.cvat import ACTION_SOURCES, CvatFormatError
from evad_d2.data.video import VideoReadError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("xml", nargs="+", help="CVAT for video 1.1 XML files, one per video")
    parser.add_argument("--out", required=True, help="the AVA-format dataset root to write")
    parser.add_argument("--split", required=True, help="train or val")
    parser.add_argument("--video", action="append", default=None, help="the video of each XML, in order (repeat)")
    parser.add_argument("--video-dir", default=None, help="folder of the videos, named like the XML files")
    parser.add_argument("--fps", type=float, default=None, help="the videos' frame rate (default: read from the video)")
    parser.add_argument("--keyframe-interval", type=int, default=1, help="seconds between keyframes (AVA: 1)")
    parser.add_argument("--actions", choices=ACTION_SOURCES, default="attribute",
                        help="attribute: a track attribute's value is the action; label: the track label is; "
                             "checkboxes: every checkbox attribute set to true is one")
    parser.add_argument("--action-attribute", default="action", help="the attribute holding the action (--actions attribute)")
    parser.add_argument("--person-label", action="append", default=None, help="read only tracks with this label (repeat)")
    parser.add_argument("--time-offset", type=int, default=900, help="timestamp of second 0 (AVA's convention: 900)")
    parser.add_argument("--version", default="2.2", help="annotation version in the file names")
    args = parser.parse_args(argv)
    try:
        sources = cvat_sources(args.xml, args.video, args.video_dir)
        convert_cvat(
            sources, args.out, args.split, fps=args.fps, keyframe_interval=args.keyframe_interval, actions=args.actions,
            action_attribute=args.action_attribute, person_labels=args.person_label, time_offset=args.time_offset,
            version=args.version,
        )
    except (CvatFormatError, VideoReadError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
