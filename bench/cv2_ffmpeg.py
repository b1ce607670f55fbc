#!/usr/bin/env python3
"""A stand-in `ffmpeg` for benchmark machines that have none: decodes video files with OpenCV's bundled FFmpeg.

The pipeline's file cameras run `ffmpeg -i FILE ... -f rawvideo -pix_fmt bgr24 pipe:` (streams/ffmpeg_util.py). The
lent GPU machine has no ffmpeg binary and imageio-ffmpeg's (170 MB) cannot travel with the code, but its Python has
opencv-python-headless, whose VideoCapture decodes with libavcodec. This script answers the three calls the file
source makes (`-version`, the header probe `-i FILE`, and the rawvideo decoder), in ffmpeg's own log format, one
process per camera as with the real binary, so decoding still costs what libavcodec costs, out of the pipeline's
process. Files only (no URLs, no filters); bench/gpu.py puts it on PATH only when `ffmpeg` is missing, and says so.
"""

from __future__ import annotations

import os
import sys

VERSION = "ffmpeg version 6.1-opencv-shim"


def header(path: str, cap) -> tuple[list[str], tuple[int, int, float]]:
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    secs = frames / fps if frames else 0.0
    hh, rest = divmod(secs, 3600)
    mm, ss = divmod(rest, 60)
    lines = [f"Input #0, video, from '{path}':",
             f"  Duration: {int(hh):02d}:{int(mm):02d}:{ss:05.2f}, start: 0.000000, bitrate: N/A",
             f"  Stream #0:0: Video: opencv, yuv420p, {w}x{h}, {fps:g} fps, {fps:g} tbr, {fps:g} tbn"]
    return lines, (w, h, fps)


def main(argv: list[str]) -> int:
    if "-version" in argv:
        print(VERSION)
        return 0
    if "-i" not in argv:
        print("the opencv ffmpeg shim takes -i FILE", file=sys.stderr)
        return 1
    path = argv[argv.index("-i") + 1]
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        print(f"{path}: Invalid data found when processing input", file=sys.stderr)
        return 1
    lines, (w, h, fps) = header(path, cap)
    for line in lines:
        print(line, file=sys.stderr)
    if not argv or argv[-1] != "pipe:":
        print("At least one output file must be specified", file=sys.stderr)
        return 1
    print("Output #0, rawvideo, to 'pipe:':", file=sys.stderr)
    print(f"  Stream #0:0: Video: rawvideo (BGR[24] / 0x18524742), bgr24, {w}x{h}, {fps:g} fps", file=sys.stderr,
          flush=True)
    out = os.fdopen(sys.stdout.fileno(), "wb", buffering=0)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            out.write(memoryview(frame).cast("B"))
    except BrokenPipeError:  # the pipeline stopped reading (max frames reached)
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
