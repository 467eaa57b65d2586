"""Throughput of the synthetic shapes generator, stage by stage, on one core.

    python benchmarks/data_speed.py [--n 1000] [--image-size 64] [--repeat 3] [--out DIR]

Reports samples/s (CPU time of this process) for: scene sampling + rendering, captions + trees,
hard negatives, PNG encoding, and the whole ``generate_dataset`` (including file writes; wall
and CPU time) into ``--out`` (default: a temporary folder; use a tmpfs such as /dev/shm to
separate encoding from the disk's file-creation cost). Each stage runs ``--repeat`` times and
the fastest run is reported: on a machine shared with other jobs, CPU time still varies by
~20% between runs (caches, frequency), and the minimum is the stable figure.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time

import numpy as np

from hiclip.data.shapes import LEVELS, ShapesConfig, _region_ids, generate_dataset, generate_sample
from hiclip.data.shapes_grammar import describe
from hiclip.data.shapes_png import encode_png
from hiclip.data.shapes_render import render
from hiclip.data.shapes_scene import sample_scene, scene_facts


def rate(n: int, seconds: float) -> str:
    return f"{n / max(seconds, 1e-9):8.0f} samples/s  ({1000 * seconds / n:6.3f} ms/sample)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the fastest is reported")
    parser.add_argument("--out", default=None, help="folder for the end-to-end run (default: a temp folder)")
    args = parser.parse_args()
    n, size = args.n, args.image_size
    config = ShapesConfig(n=n, image_size=size)
    for i in range(20):  # warm the shape/texture caches, as a long run would
        generate_sample(i, "train", config)

    def best(stage) -> float:
        times = []
        for _ in range(max(1, args.repeat)):
            start = time.process_time()
            stage()
            times.append(time.process_time() - start)
        return min(times)

    scenes = []

    def scene_and_render() -> None:
        scenes.clear()
        for i in range(n):
            rng = np.random.default_rng([1, i])
            scene = sample_scene(random.Random(i), size)
            scenes.append((scene, render(scene, rng)))

    def captions() -> None:
        for i, (scene, rendering) in enumerate(scenes):
            facts = scene_facts(scene, _region_ids(scene, rendering))
            for k in range(config.captions_per_image):
                describe(facts, seed=i * 7 + k)

    def samples() -> None:
        for i in range(n):
            generate_sample(i, "train", config)

    def encodes() -> None:
        for _, rendering in scenes:
            for array, level in [(rendering.image, config.image_compress_level)] + \
                    [(getattr(rendering, lvl), config.mask_compress_level) for lvl in LEVELS]:
                encode_png(array, level)

    t_render = best(scene_and_render)
    t_caption = best(captions)
    t_sample = best(samples)
    t_png = best(encodes)

    wall, cpu = [], []
    for _ in range(max(1, args.repeat)):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.process_time()
            report = generate_dataset(args.out or tmp, config, overwrite=True)
            cpu.append(time.process_time() - start)
            wall.append(report.seconds)

    print(f"shapes generator, {n} samples at {size} px, one core (CPU time unless noted; best of {args.repeat})")
    print(f"  scene + render            {rate(n, t_render)}")
    print(f"  {config.captions_per_image} captions + trees        {rate(n, t_caption)}")
    print(f"  whole sample (+negatives) {rate(n, t_sample)}")
    print(f"  4 PNG encodes (in memory) {rate(n, t_png)}")
    print(f"  sample + encode           {rate(n, t_sample + t_png)}")
    print(f"  generate_dataset (wall, with file writes) {n / min(wall):.0f} samples/s "
          f"(CPU time {n / min(cpu):.0f} samples/s)")


if __name__ == "__main__":
    main()
