"""Train a grid of recipes x seeds in parallel on one machine and score each run the way
RESULTS.md does: induced trees (Tree-Transformer parser and binary, standard convention) on the
validation and test splits, object-level image groups against SLIC at the same segment count on
the test split, and the validation retrieval Rsum the run logged.

A grid is a JSON object mapping a recipe name to the ``hiclip train`` arguments that define it
(``--data``, ``--out``, ``--seed`` and ``--no-progress`` are added), e.g.
``benchmarks/sweeps/mlm-levers.json``. Jobs run seed-major (every recipe's first seed, then the
second, ...) so that a sweep stopped by ``--deadline`` still has comparable seeds; a run whose
``sweep.json`` exists is not redone. The summary (``summary.md``, ``results.jsonl``) is rewritten
after every job. Usage::

    hiclip data shapes --out /tmp/shapes4k --n 4000 --seed 0
    python benchmarks/recipe_sweep.py --grid benchmarks/sweeps/mlm-levers.json \\
        --data /tmp/shapes4k --out runs/sweep --seeds 0 1 2 --jobs 2 --threads 1
    # on a GPU machine: --device cuda --jobs 12
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "hiclip.cli"]


def _run(args: list[str], log: Path, env: dict[str, str]) -> str:
    """Run one ``hiclip`` command, appending its output to ``log``; return its stdout."""
    with log.open("a") as handle:
        handle.write("$ hiclip " + " ".join(args) + "\n")
        handle.flush()
        done = subprocess.run(CLI + args, stdout=subprocess.PIPE, stderr=handle, text=True, env=env)
        handle.write(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"hiclip {args[0]} failed ({done.returncode}); see {log}")
    return done.stdout


def _tree_scores(pred: Path, data: str, split: str, key: str | None, log: Path,
                 env: dict[str, str]) -> dict[str, float]:
    args = ["score", "trees", "--pred", str(pred), "--gold", data, "--convention", "standard",
            "--split", split, "--json", "--no-baselines"]
    if key:
        args += ["--tree-key", key]
    result = json.loads(_run(args, log, env))
    return {k: round(result[k], 2) for k in ("sentence_f1", "corpus_f1", "precision", "recall")}


def _last_validation(metrics: Path) -> dict[str, float]:
    last: dict[str, float] = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "val_rsum" in record:
            last = {k: v for k, v in record.items() if k.startswith("val_")}
    return last


def run_job(name: str, train_args: list[str], seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    """Train one (recipe, seed) and score it; the result is also written to ``sweep.json``."""
    folder = Path(opts.out) / f"{name}-s{seed}"
    done_file = folder / "sweep.json"
    if done_file.exists():
        return json.loads(done_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "sweep.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    device = ["--device", opts.device] if opts.device else []
    threads = ["--threads", str(opts.threads)] if opts.threads else []
    start = time.time()
    if not (folder / "final" / "model.safetensors").exists():
        _run(["train", *train_args, "--data", opts.data, "--out", str(folder), "--seed", str(seed),
              "--no-progress", *device, *threads], log, env)
    trained = time.time()
    if opts.train_only:
        return {"recipe": name, "seed": seed, "train_seconds": round(trained - start, 1)}
    final = str(folder / "final")
    result: dict[str, Any] = {"recipe": name, "seed": seed, "args": train_args,
                              "train_seconds": round(trained - start, 1)}
    result.update(_last_validation(folder / "metrics.jsonl"))
    for split in ("val", "test"):
        pred = folder / f"induce-{split}.jsonl"
        extra = [] if split == "test" else ["--no-images"]
        _run(["induce", "--checkpoint", final, "--data", opts.data, "--split", split, "--out",
              str(pred), *device, *extra], log, env)
        for key, label in ((None, "tt"), ("binary", "binary")):
            for metric, value in _tree_scores(pred, opts.data, split, key, log, env).items():
                result[f"{split}_{label}_{metric}"] = value
    groups = json.loads(_run(["score", "groups", "--pred", str(folder / "induce-test.jsonl"),
                              "--data", opts.data, "--split", "test", "--gt-level", "object",
                              "--baselines", "slic", "--json"], log, env))
    for row in groups["rows"]:
        result[f"groups_{row['method']}_miou"] = row["miou"]
        result[f"groups_{row['method']}_segments"] = round(row["n_segments"], 1)
    result["groups_layer"] = groups["best_level"].get("object")
    result["eval_seconds"] = round(time.time() - trained, 1)
    for pred in folder.glob("induce-*.jsonl"):
        pred.unlink()  # large (links of every image); the scores are kept
    done_file.write_text(json.dumps(result, indent=1))
    return result


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def summarise(results: list[dict[str, Any]], grid: dict[str, list[str]], out: Path) -> str:
    """Markdown table: one row per recipe, mean +- sd over the seeds that finished."""
    lines = ["| recipe | seeds | test F1 (TT) | per seed | P / R | test F1 (binary) | val F1 (TT) | "
             "groups mIoU model / SLIC (per seed) | val Rsum | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in grid:
        rows = sorted((r for r in results if r["recipe"] == name), key=lambda r: r["seed"])
        if not rows:
            continue
        test = [r["test_tt_sentence_f1"] for r in rows]
        groups = ", ".join(f"{r['groups_model_miou']:.3f}/{r['groups_slic_miou']:.3f}" for r in rows)
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in rows)} | {_mean_sd(test)} | "
            f"{'/'.join(f'{v:.1f}' for v in test)} | "
            f"{_mean_sd([r['test_tt_precision'] for r in rows])} / "
            f"{_mean_sd([r['test_tt_recall'] for r in rows])} | "
            f"{_mean_sd([r['test_binary_sentence_f1'] for r in rows])} | "
            f"{_mean_sd([r['val_tt_sentence_f1'] for r in rows])} | {groups} | "
            f"{_mean_sd([r.get('val_rsum', float('nan')) for r in rows])} | "
            f"{statistics.mean(r['train_seconds'] for r in rows):.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    with (out / "results.jsonl").open("w") as handle:
        for r in sorted(results, key=lambda r: (r["recipe"], r["seed"])):
            handle.write(json.dumps(r) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, help="JSON: recipe name -> hiclip train arguments")
    parser.add_argument("--data", required=True, help="shapes dataset folder (hiclip data shapes)")
    parser.add_argument("--out", required=True, help="sweep folder (one run folder per job)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", metavar="NAME[:SEED]",
                        help="run only these recipes of the grid (NAME:SEED: only that seed)")
    parser.add_argument("--train-only", action="store_true",
                        help="train and stop; a later run without it scores the trained runs")
    parser.add_argument("--jobs", type=int, default=1, help="jobs run at once")
    parser.add_argument("--device", help="training and induction device (default: train's auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per job")
    parser.add_argument("--deadline", type=float, default=0,
                        help="seconds after which no new job starts (0: none)")
    opts = parser.parse_args(argv)
    try:
        grid: dict[str, list[str]] = json.loads(Path(opts.grid).read_text())
    except (OSError, json.JSONDecodeError) as error:
        parser.error(f"{opts.grid}: {error}")
    order = [(name, seed) for seed in opts.seeds for name in grid]
    if opts.only:
        wanted = [item.rpartition(":")[::2] if ":" in item else (item, "") for item in opts.only]
        unknown = sorted({name for name, _ in wanted} - set(grid))
        if unknown:
            parser.error(f"{opts.grid}: no recipe named {', '.join(unknown)}")
        order = [(name, int(seed)) for name, seed in wanted if seed] + [
            (name, seed) for seed in opts.seeds for name, s in wanted if not s]
        grid = {k: v for k, v in grid.items() if any(k == name for name, _ in wanted)}
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def job(name: str, seed: int) -> None:
        if opts.deadline and time.time() - began > opts.deadline:
            print(f"skipped {name} seed {seed}: past the deadline", flush=True)
            return
        try:
            result = run_job(name, grid[name], seed, opts)
        except RuntimeError as error:
            print(f"FAILED {name} seed {seed}: {error}", flush=True)
            return
        with lock:
            if opts.train_only:
                print(f"[{time.time() - began:6.0f} s] {name} seed {seed}: trained in "
                      f"{result['train_seconds']} s", flush=True)
                return
            results.append(result)
            summarise(results, grid, out)
            print(f"[{time.time() - began:6.0f} s] {name} seed {seed}: test F1 "
                  f"{result['test_tt_sentence_f1']:.1f}, groups {result['groups_model_miou']:.3f} "
                  f"vs SLIC {result['groups_slic_miou']:.3f}, val Rsum "
                  f"{result.get('val_rsum', float('nan')):.1f}", flush=True)

    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        for _ in pool.map(lambda item: job(*item), order):
            pass
    if opts.train_only:
        return 0
    print(summarise(results, grid, out))
    return 0 if len(results) == len(order) else 1


if __name__ == "__main__":
    sys.exit(main())
