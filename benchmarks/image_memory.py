"""Memory and time of the evaluation resize on elongated images, bounded against unbounded.

    python benchmarks/image_memory.py [--sizes 64 224] [--max-unbounded-gb 1.0]

Each case runs in a fresh process and prints the wall time of ``Resize(size)`` +
``CenterCrop(size)`` and the growth of the process's peak resident memory while it ran, for the
bounded resize of ``hiclip.data.transforms`` (the central band of at most ``8 x size`` pixels) and
for the unbounded one it replaced (the whole image resized with its shorter side to ``size``).
The unbounded case is skipped where its output alone would exceed ``--max-unbounded-gb``; its
expected size is printed instead.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
from hiclip.data.transforms import CenterCrop, Resize
width, height, size, kind = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
image = Image.fromarray(np.full((height, width, 3), 200, np.uint8))
if kind == "bounded":
    resize = Resize(size)
else:
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    resize = lambda im: im.resize(new, Image.BICUBIC)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = CenterCrop(size)(resize(image))
seconds = time.perf_counter() - start
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"seconds": seconds, "peak_growth_mb": grown / 1024, "out": list(out.size)}))
"""


def run_case(width: int, height: int, size: int, kind: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CASE, str(width), str(height), str(size), kind],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--max-unbounded-gb", type=float, default=1.0)
    args = parser.parse_args()
    print(f"{'image':>10} {'size':>5} {'kind':>9} {'seconds':>9} {'peak MB':>9}")
    for width, height in ((200000, 1), (1, 20000), (640, 480)):
        for size in args.sizes:
            for kind in ("bounded", "unbounded"):
                long_side = max(width, height) * size / min(width, height)
                expected_gb = long_side * size * 3 / 1e9
                if kind == "unbounded" and expected_gb > args.max_unbounded_gb:
                    print(f"{f'{width}x{height}':>10} {size:>5} {kind:>9}   skipped: its output "
                          f"alone is {expected_gb:.1f} GB")
                    continue
                result = run_case(width, height, size, kind)
                print(f"{f'{width}x{height}':>10} {size:>5} {kind:>9} {result['seconds']:9.4f} "
                      f"{result['peak_growth_mb']:9.1f}")


if __name__ == "__main__":
    main()
