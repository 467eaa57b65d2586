"""``hiclip demo``: the main job, end to end on the embedded synthetic data.

Generates the synthetic dataset the shipped checkpoints were trained on (their ``recipe.json``
says how), induces trees and image groups on its held-out test split for HiCLIP and for its
vanilla twin, scores them against the exact gold and every baseline, measures retrieval, prints
a results table, writes ``<out>/report.md`` with figures, and starts the app (``--no-app`` skips).
``--train`` first retrains both models with the recorded recipe (into ``<out>/checkpoints``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

from hiclip.errors import HiCLIPError
from hiclip.paths import REPO_ROOT

MODELS = (("HiCLIP", "hiclip-tiny-shapes"), ("CLIP", "clip-tiny-shapes"))
TREE_PARSERS = (("tree_transformer", "Tree-Transformer parser"), ("binary", "binary lowest-link"))
CONVENTIONS = ("standard", "vgnsl")
BASELINES = ("left", "right", "balanced", "random")
GT_LEVELS = ("object", "part", "group")
SEGMENT_BASELINES = "grid,slic,felzenszwalb,rag"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "demo", help="report folder")
    parser.add_argument("--checkpoints", type=Path, default=REPO_ROOT / "checkpoints",
                        help="folder holding hiclip-tiny-shapes/ and clip-tiny-shapes/")
    parser.add_argument("--train", action="store_true",
                        help="retrain both models with the recorded recipe first (into OUT/checkpoints)")
    parser.add_argument("--no-app", action="store_true", help="do not start the app at the end")
    parser.add_argument("--port", type=int, default=8501, help="app port")


def _call(argv: list[str]) -> str:
    """Run a ``hiclip`` command in-process and return what it printed; its errors propagate."""
    from hiclip.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    if code:
        raise HiCLIPError(f"'hiclip {' '.join(argv)}' failed with status {code}")
    return buffer.getvalue()


def _json(argv: list[str]) -> dict[str, Any]:
    text = _call(argv)
    start = text.find("{")
    return json.loads(text[start:])


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
    print(_call(args).strip())
    stamp.write_text(json.dumps(data))
    return folder


def train_models(recipe: dict[str, Any], data: Path, out: Path) -> Path:
    """Retrain both models with the recipe's command lines; returns the checkpoints folder."""
    folder = out / "checkpoints"
    for _, name in MODELS:
        argv = [a.replace("{data}", str(data)).replace("{out}", str(out / "train" / name))
                for a in recipe["train"][name]]
        start = _step(f"training {name}: hiclip {' '.join(argv)}")
        _call(argv)
        final = out / "train" / name / "final"
        if (folder / name).exists():
            shutil.rmtree(folder / name)
        shutil.copytree(final, folder / name)
        (folder / name / "recipe.json").write_text(json.dumps(recipe, indent=2))
        print(f"[demo] trained {name} in {time.perf_counter() - start:.0f} s")
    return folder


def evaluate_model(checkpoint: Path, data: Path, out: Path, baselines: str = SEGMENT_BASELINES) -> dict[str, Any]:
    """Induce, score trees (both conventions, both parsers), score groups and measure retrieval.

    ``baselines``: segmentation baselines run at this model's number of segments ("none": skip).
    """
    out.mkdir(parents=True, exist_ok=True)
    pred = out / "pred.jsonl"
    induce = ["induce", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
              "--out", str(pred)]
    _call(induce)
    result: dict[str, Any] = {"trees": {}, "groups": None, "retrieval": None}
    for parser, _ in TREE_PARSERS:
        for convention in CONVENTIONS:
            result["trees"][f"{parser}/{convention}"] = _json(
                ["score", "trees", "--gold", str(data / "manifest.jsonl"), "--split", "test", "--pred", str(pred),
                 "--tree-key", parser, "--convention", convention, "--json"])
    result["groups"] = _json(["score", "groups", "--pred", str(pred), "--data", str(data), "--split", "test",
                              "--baselines", baselines, "--json"])
    retrieval = out / "retrieval.json"
    evaluate = ["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
                "--task", "all", "--out", str(retrieval)]
    _call(evaluate)
    result["retrieval"] = json.loads(retrieval.read_text())
    (out / "scores.json").write_text(json.dumps(result, indent=1))
    return result


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1f}"


def tree_table(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| system | parser | standard sent-F1 | standard corpus-F1 | P / R | vgnsl corpus-F1 | vgnsl sent-F1 | spans/sent |",
            "|---|---|---|---|---|---|---|---|"]
    for model, result in results.items():
        for parser, label in TREE_PARSERS:
            std = result["trees"][f"{parser}/standard"]
            vg = result["trees"][f"{parser}/vgnsl"]
            rows.append(f"| {model} | {label} | {_pct(std['sentence_f1'])} | {_pct(std['corpus_f1'])} | "
                        f"{_pct(std['precision'])} / {_pct(std['recall'])} | {_pct(vg['corpus_f1'])} | "
                        f"{_pct(vg['sentence_f1'])} | {std['spans']['pred_per_sentence']:.2f} |")
    first = next(iter(results.values()))
    for name in BASELINES:
        std = first["trees"]["tree_transformer/standard"]["baselines"][name]
        vg = first["trees"]["tree_transformer/vgnsl"]["baselines"][name]
        rows.append(f"| {std['prediction']} | - | {_pct(std['sentence_f1'])} | {_pct(std['corpus_f1'])} | "
                    f"{_pct(std['precision'])} / {_pct(std['recall'])} | {_pct(vg['corpus_f1'])} | "
                    f"{_pct(vg['sentence_f1'])} | |")
    return rows


def group_table(results: dict[str, dict[str, Any]], level: str) -> list[str]:
    rows = [f"| system ({level} masks) | layer | mIoU | ARI | FG-ARI | BR@2px | USE | ASA | #seg |",
            "|---|---|---|---|---|---|---|---|---|"]
    for model, result in results.items():
        for row in result["groups"]["rows"]:
            if row["gt_level"] != level or row["level"] != "best":
                continue
            name = model if row["method"] == "model" else f"{row['method']} (at {model}'s #seg)"
            if row["method"] != "model" and model != next(iter(results)):
                continue
            rows.append(f"| {name} | {row.get('layer', '')} | {row['miou']:.3f} | {row['ari']:.3f} | "
                        f"{row['fg_ari']:.3f} | {row['boundary_recall']:.3f} | {row['use']:.3f} | "
                        f"{row['asa']:.3f} | {row['n_segments']:.1f} |")
    return rows


def retrieval_table(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| system | I->T R@1 | R@5 | R@10 | T->I R@1 | R@5 | R@10 | Rsum | chance I->T R@1 | zero-shot top-1 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for model, result in results.items():
        r = result["retrieval"]["retrieval"]
        zeroshot = ", ".join(f"{key} {value['top1']:.1f} (chance {value['chance_top1']:.1f})"
                             for key, value in (result["retrieval"].get("zeroshot") or {}).items()
                             if isinstance(value, dict))
        rows.append(f"| {model} | {r['i2t_R@1']:.1f} | {r['i2t_R@5']:.1f} | {r['i2t_R@10']:.1f} | "
                    f"{r['t2i_R@1']:.1f} | {r['t2i_R@5']:.1f} | {r['t2i_R@10']:.1f} | {r['rsum']:.1f} | "
                    f"{r['chance_i2t_R@1']:.1f} | {zeroshot} |")
    return rows


def write_report(results: dict[str, dict[str, Any]], out: Path, checkpoints: dict[str, Path],
                 figures: Path | None, seconds: float) -> Path:
    lines = ["# hiclip demo report", "",
             f"Synthetic shapes test split, {seconds:.0f} s. Checkpoints: "
             + ", ".join(f"{m} = `{p}`" for m, p in checkpoints.items()) + ".", "",
             "## Trees against the exact gold trees", "",
             "standard = Kim et al. 2019 convention (sentence F1 headline); vgnsl = Shi et al. 2019 "
             "(corpus F1 headline). Baselines are scored on the same sentences.", "",
             *tree_table(results), "", "## Image groups against the exact masks (best layer per level)", ""]
    for level in GT_LEVELS:
        lines += [*group_table(results, level), ""]
    lines += ["Segmentation baselines are run per image at the number of segments HiCLIP predicted.", "",
              "## Retrieval (several captions per image)", "", *retrieval_table(results), ""]
    if figures is not None:
        pngs = sorted(figures.rglob("*.png"))
        if pngs:
            lines += ["## Figures", ""]
            lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs[:24]]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
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
    results: dict[str, dict[str, Any]] = {}
    for label, path in checkpoints.items():
        t = _step(f"inducing and scoring {label} ({path.name})")
        # Segmentation baselines are reported once, at HiCLIP's number of segments.
        baselines = SEGMENT_BASELINES if label == MODELS[0][0] else "none"
        results[label] = evaluate_model(path, data, out / path.name, baselines)
        print(f"[demo] {label} done in {time.perf_counter() - t:.0f} s")
    t = _step("drawing figures")
    figures = out / "figures"
    _call(["figures", "--checkpoint", str(checkpoints["HiCLIP"]), "--compare", f"CLIP={checkpoints['CLIP']}",
           "--data", str(data), "--split", "test", "--out", str(figures), "--random", "3"])
    report = write_report(results, out, checkpoints, figures, time.perf_counter() - started)
    print(report.read_text())
    print(f"[demo] report written to {report} ({time.perf_counter() - started:.0f} s in all)")
    if args.no_app:
        return 0
    from hiclip.cli import main

    return main(["app", "--checkpoints", str(folder), "--port", str(args.port), "--data", str(data)])
