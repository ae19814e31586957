"""Time and peak memory of the evaluation crop on an extreme-aspect image (issue #23, item 1).

A 60,000 x 9 PNG (0.54 MP, 603 bytes) used to cost 166 s and 16 GB: the shorter side was
resized to 256 first, i.e. the whole strip to 256 x 1,706,667, and only then cropped. Now
`tokbench.imageio.read_image` refuses it from its header (aspect ratio over 100:1), and
`resize_center_crop` computes the crop box first, so even with the bound lifted the crop
resamples only the kept pixels. Each case runs in a fresh Python process; "peak" is the growth
of that process's peak RSS (``ru_maxrss``) during the timed step.

    python benchmarks/wide_image_crop.py                 # 60,000 x 9 to 256
    python benchmarks/wide_image_crop.py --width 6000 --whole   # also the old resize-then-crop
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CASE = r"""
import json, resource, sys, time
import torch
from tokbench.imageio import BadImageError, center_crop_geometry, read_image, resize, resize_center_crop, uint8_to_tensor
torch.set_num_threads(1)
path, case, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x = None if case == "refuse" else uint8_to_tensor(read_image(path, max_aspect=float("inf")))
before, start = kib(), time.perf_counter()
if case == "refuse":
    try:
        read_image(path)
        outcome = "read"
    except BadImageError as err:
        outcome = f"refused: {err}"
elif case == "crop-first":
    outcome = str(tuple(resize_center_crop(x, size).shape))
else:  # the old path: the whole image resampled, then cropped
    _, hw, (top, left) = center_crop_geometry(*x.shape[-2:], size)
    outcome = str(tuple(resize(x[None], hw)[0][:, top:top + size, left:left + size].shape))
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": (kib() - before) / 1024, "outcome": outcome}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=60_000)
    ap.add_argument("--height", type=int, default=9)
    ap.add_argument("--size", type=int, default=256, help="evaluation resolution (shorter side, crop)")
    ap.add_argument("--whole", action="store_true", help="also time the old whole-image resample (slow when wide)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "strip.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)).save(path)
        print(f"{args.width} x {args.height} PNG ({path.stat().st_size:,} bytes), crop to {args.size}")
        for case in ["refuse", "crop-first"] + (["whole-then-crop"] if args.whole else []):
            out = subprocess.run([sys.executable, "-c", CASE, str(path), case, str(args.size)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout)
            print(f"  {case:16s} {row['seconds']:8.3f} s  peak +{row['peak_mib']:8.1f} MiB  {row['outcome']}")


if __name__ == "__main__":
    main()
