"""``hiclip demo``: the main job, end to end on the embedded synthetic data.

Generates the synthetic dataset the shipped checkpoints were trained on (their ``recipe.json``
says how), induces trees and image groups on its held-out test split for HiCLIP and for its
vanilla twin (``<out>/<checkpoint>/pred.jsonl``), scores those files with the library functions
``hiclip score`` runs (``induction.evaluation``), measures retrieval (``hiclip.evaluate``), draws
the figures from the same evaluations (``viz.figures``), writes ``<out>/report.md`` (findings,
tables, captioned figures: ``viz.report``), and starts the app (``--no-app`` skips).
``--train`` first retrains both models with the recorded recipe (into ``<out>/checkpoints``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from hiclip.atomic import atomic_write_text, check_writable
from hiclip.errors import HiCLIPError
from hiclip.paths import REPO_ROOT

MODELS = (("HiCLIP", "hiclip-tiny-shapes"), ("CLIP", "clip-tiny-shapes"))
SPLIT = "test"
DEFAULT_BASELINES = ("grid", "slic", "felzenszwalb", "rag")
N_SAMPLES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "demo", help="report folder")
    parser.add_argument("--checkpoints", type=Path, default=REPO_ROOT / "checkpoints",
                        help="folder holding hiclip-tiny-shapes/ and clip-tiny-shapes/")
    parser.add_argument("--train", action="store_true",
                        help="retrain both models with the recorded recipe first (into OUT/checkpoints)")
    parser.add_argument("--no-app", action="store_true", help="do not start the app at the end")
    parser.add_argument("--port", type=int, default=8501, help="app port")


def _cli(argv: list[str]) -> None:
    """Run a ``hiclip`` command in-process (it prints its own output); its errors propagate."""
    from hiclip.cli import main

    code = main(argv)
    if code:
        raise HiCLIPError(f"'hiclip {' '.join(argv)}' failed with status {code}")


def _step(message: str) -> float:
    print(f"[demo] {message}", flush=True)
    return time.perf_counter()


def read_recipe(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "recipe.json"
    if not path.is_file():
        raise HiCLIPError(f"{path}: missing; a shipped checkpoint records how it was trained "
                          "(run 'make demo TRAIN=1' to retrain)")
    return json.loads(path.read_text())


def ensure_data(recipe: dict[str, Any], out: Path) -> Path:
    """Generate the recipe's synthetic dataset under ``out`` unless it is already there."""
    data = recipe["data"]
    folder = out / "data"
    stamp = folder / "demo_data.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == data and (folder / "manifest.jsonl").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    args = ["data", "shapes", "--out", str(folder)]
    for key, value in data.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    _cli(args)
    atomic_write_text(stamp, json.dumps(data))
    return folder


def train_models(recipe: dict[str, Any], data: Path, out: Path) -> Path:
    """Retrain both models with the recipe's command lines; returns the checkpoints folder."""
    folder = out / "checkpoints"
    for _, name in MODELS:
        argv = [a.replace("{data}", str(data)).replace("{out}", str(out / "train" / name))
                for a in recipe["train"][name]]
        start = _step(f"training {name}: hiclip {' '.join(argv)}")
        _cli(argv)
        final = out / "train" / name / "final"
        if (folder / name).exists():
            shutil.rmtree(folder / name)
        shutil.copytree(final, folder / name)
        atomic_write_text(folder / name / "recipe.json", json.dumps(recipe, indent=2))
        print(f"[demo] trained {name} in {time.perf_counter() - start:.0f} s")
    return folder


def _bar(desc: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="image", leave=False)


def evaluate_model(label: str, checkpoint: Path, data: Path, samples: list, golds, gold_text: str, truth,
                   out: Path, baselines: tuple[str, ...] = DEFAULT_BASELINES):
    """Induce (written to ``out/pred.jsonl``), score trees (both conventions, both parsers) and
    groups (every layer; ``baselines`` at the best one) of the file as ``hiclip score`` would,
    and measure retrieval; returns ``(SystemEvaluation, retrieval results)``."""
    import torch
    from tqdm import tqdm

    import hiclip
    from hiclip.evaluate import run_evaluation
    from induction.evaluation import EvaluationOptions, evaluate_system
    from induction.group_evaluation import GroupEvalOptions
    from induction.induce import InduceOptions, induce_samples
    from induction.predictions import read_predictions, write_predictions

    pred = out / "pred.jsonl"
    model, tokenizer = hiclip.load(checkpoint)
    model.eval()
    n_captions = sum(len(s.captions) for s in samples)
    with torch.inference_mode(), \
            tqdm(total=n_captions, desc=f"{label}: induce captions", unit="caption", leave=False) as text_bar, \
            tqdm(total=len(samples), desc=f"{label}: induce images", unit="sample", leave=False) as bar:
        write_predictions(induce_samples(model, tokenizer, samples, InduceOptions(), str(checkpoint),
                                         out / "pred_labels", bar.update, text_bar.update), pred)
    predictions = read_predictions(pred, SPLIT)
    # At the gt granularity every baseline runs at each gt level's k, but only the grid over the
    # whole k range too (each k is one more segmentation per image: the demo's time budget).
    k_range_baselines = tuple(b for b in baselines if b == "grid")
    options = EvaluationOptions(split=SPLIT, groups=GroupEvalOptions(level="all", baseline_level="best",
                                                                     baselines=tuple(baselines),
                                                                     k_range_baselines=k_range_baselines))
    system = evaluate_system(label, predictions, options, golds, gold_text, truth, str(data), progress=_bar)
    retrieval = run_evaluation(checkpoint, str(data), SPLIT, "all")
    atomic_write_text(out / "retrieval.json", json.dumps(retrieval, indent=2) + "\n")
    atomic_write_text(out / "scores.json", json.dumps({**system.to_dict(), "retrieval": retrieval}, indent=1))
    return system, retrieval


def run(args: argparse.Namespace) -> int:
    from hiclip.data import open_dataset
    from induction.evaluation import gold_trees
    from induction.group_evaluation import ground_truth
    from viz.figures import draw_figures
    from viz.report import demo_report

    started = time.perf_counter()
    out = args.out
    check_writable(out, folder=True)
    shipped = {name: args.checkpoints / name for _, name in MODELS}
    recipe = read_recipe(shipped["hiclip-tiny-shapes"])
    t = _step(f"generating the synthetic dataset ({recipe['data']})")
    data = ensure_data(recipe, out)
    print(f"[demo] data ready in {time.perf_counter() - t:.0f} s: {data}")
    folder = train_models(recipe, data, out) if args.train else args.checkpoints
    checkpoints = {label: folder / name for label, name in MODELS}
    for label, path in checkpoints.items():
        if not (path / "config.json").is_file():
            raise HiCLIPError(f"{path}: no checkpoint (config.json missing)")
    samples = list(open_dataset(data, split=SPLIT))
    golds, gold_text = gold_trees(str(data / "manifest.jsonl"), SPLIT)
    truth = ground_truth(samples)
    systems, retrieval = {}, {}
    for label, path in checkpoints.items():
        t = _step(f"inducing and scoring {label} ({path.name})")
        # Segmentation baselines are reported once, at HiCLIP's number of segments.
        baselines = DEFAULT_BASELINES if label == MODELS[0][0] else ()
        systems[label], retrieval[label] = evaluate_model(label, path, data, samples, golds, gold_text, truth,
                                                          out / path.name, baselines)
        print(f"[demo] {label} done in {time.perf_counter() - t:.0f} s")
    t = _step("drawing figures")
    from tqdm import tqdm

    with tqdm(desc="figures", unit="figure", leave=False) as bar:
        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        index = draw_figures(list(systems.values()), samples, out / "figures", golds=golds,
                             n_samples=N_SAMPLES, informative=True, convention="standard", progress=step)
    print(f"[demo] figures drawn in {time.perf_counter() - t:.0f} s")
    text = demo_report(systems, retrieval, checkpoints, index, time.perf_counter() - started, out)
    report = atomic_write_text(out / "report.md", text)
    print(text)
    print(f"[demo] report written to {report} ({time.perf_counter() - started:.0f} s in all)")
    if args.no_app:
        return 0
    from hiclip.cli import main

    return main(["app", "--checkpoints", str(folder), "--port", str(args.port), "--data", str(data)])
