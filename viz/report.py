"""The demo report (``runs/demo/report.md``): findings in words, tables and captioned figures.

Everything here formats numbers it is given: the tree and group evaluations of each system
(:class:`induction.evaluation.SystemEvaluation`), the retrieval results (``hiclip.evaluate``) and
the figures index (:func:`viz.figures.draw_figures`). The findings are computed from those numbers
(comparisons and differences, stated whichever way they fall), so the words cannot drift from the
tables beneath them.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from induction.evaluation import PARSER_NAMES, PARSERS, SystemEvaluation
from induction.granularity import COLOUR, LINKS, SECTION as GRANULARITY, SINGLE_LINKAGE
from induction.group_evaluation import MODEL

GT_LEVELS = ("object", "part", "group")
TREE_BASELINES = ("left", "right", "balanced", "random")


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1f}"


def _side(difference: float, unit: str = "", digits: int = 1, zero: float = 0.05) -> str:
    """``"12.3 above"`` / ``"4.0 below"`` / ``"level with"`` for a difference."""
    if abs(difference) < zero:
        return "level with"
    return f"{abs(difference):.{digits}f}{unit} {'above' if difference > 0 else 'below'}"


# ----------------------------------------------------------------------------- tables


def tree_table(systems: Mapping[str, SystemEvaluation]) -> list[str]:
    """Both parsers of every system under both conventions, then the baselines on the same sentences."""
    rows = ["| system | parser | standard sent-F1 | standard corpus-F1 | P / R | vgnsl corpus-F1 | vgnsl sent-F1 | spans/sent |",
            "|---|---|---|---|---|---|---|---|"]
    for model, result in systems.items():
        for parser in PARSERS:
            if (parser, "standard") not in result.trees:
                continue
            std = result.trees[(parser, "standard")].report
            vg = result.trees[(parser, "vgnsl")].report
            rows.append(f"| {model} | {PARSER_NAMES[parser]} | {_pct(std.sentence_f1)} | {_pct(std.corpus_f1)} | "
                        f"{_pct(std.precision)} / {_pct(std.recall)} | {_pct(vg.corpus_f1)} | "
                        f"{_pct(vg.sentence_f1)} | {std.pred_spans_per_sentence:.2f} |")
    first = next((r for r in systems.values() if ("tree_transformer", "standard") in r.trees), None)
    if first is not None:
        std_all = first.trees[("tree_transformer", "standard")].baselines
        vg_all = first.trees[("tree_transformer", "vgnsl")].baselines
        for name in TREE_BASELINES:
            std, vg = std_all[name], vg_all[name]
            rows.append(f"| {std.prediction} | - | {_pct(std.sentence_f1)} | {_pct(std.corpus_f1)} | "
                        f"{_pct(std.precision)} / {_pct(std.recall)} | {_pct(vg.corpus_f1)} | "
                        f"{_pct(vg.sentence_f1)} | |")
    return rows


def group_table(systems: Mapping[str, SystemEvaluation], level: str) -> list[str]:
    """Each system at its best layer against ``level`` masks, and the baselines at the first
    system's number of segments (their layer cell is blank: they have no layers)."""
    rows = [f"| system ({level} masks) | layer | mIoU | ARI | FG-ARI | BR@2px | USE | ASA | #seg |",
            "|---|---|---|---|---|---|---|---|---|"]
    first = next(iter(systems))
    for model, result in systems.items():
        if result.groups is None:
            continue
        for row in result.groups.rows:
            if row.gt_level != level or row.level != "best":
                continue
            if row.matched and model != first:
                continue
            name = model if not row.matched else f"{row.method} (at {model}'s #seg)"
            layer = "" if row.matched else row.layer
            rows.append(f"| {name} | {layer} | {row.miou:.3f} | {row.ari:.3f} | "
                        f"{row.fg_ari:.3f} | {row.boundary_recall:.3f} | {row.use:.3f} | "
                        f"{row.asa:.3f} | {row.n_segments:.1f} |")
    return rows


def zero_shot_summary(key: str, value: Mapping[str, Any]) -> str:
    """``count 20.7 (chance 14.3; tied: four = five = six)``: tied classes share one embedding."""
    tied = "; ".join(" = ".join(group) for group in value.get("tied_classes") or [])
    return f"{key} {value['top1']:.1f} (chance {value['chance_top1']:.1f}" + (f"; tied: {tied})" if tied else ")")


def _granularity(result: SystemEvaluation) -> dict[str, Any] | None:
    return None if result.groups is None else result.groups.sections.get(GRANULARITY)


def _value(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def granularity_table(systems: Mapping[str, SystemEvaluation], level: str) -> list[str]:
    """Every system and baseline cut at each image's gt segments + 1 of ``level`` masks, ARI
    averaged over the k range, the patch-grid ceilings and the edge AUC probe (the section
    ``gt_granularity`` of each system's group evaluation; baselines from the first system's)."""
    first = next(iter(systems))
    sections = {name: _granularity(result) for name, result in systems.items()}
    found = next((sec for sec in sections.values() if sec is not None), None)
    if found is None:
        return []
    low, high = found["k_range"]
    rows = [f"| method ({level} masks, k = gt segments + 1) | mIoU | ARI | FG-ARI | BR@2px | #seg | ARI over k={low}..{high} |",
            "|---|---|---|---|---|---|---|"]
    for name, sec in sections.items():
        if sec is None:
            continue
        k_free = {r["method"]: r["mean_ari"] for r in sec["ari_over_k"] if r["gt_level"] == level}
        for row in sec["rows"]:
            if row["gt_level"] != level:
                continue
            model_row = row["method"].startswith("model")
            if not model_row and name != first:
                continue
            label = f"{name}: {row['method'].removeprefix('model ')}" if model_row else row["method"]
            rows.append(f"| {label} | {_value(row['miou'])} | {_value(row['ari'])} | {_value(row['fg_ari'])} | "
                        f"{_value(row['boundary_recall'])} | {_value(row['n_segments'], 1)} | "
                        f"{_value(k_free.get(row['method']))} |")
    for row in found["ceiling"]:
        if row["gt_level"] == level:
            rows.append(f"| ceiling: majority label per patch, {row['grid'][0]}x{row['grid'][1]} grid "
                        f"({row['patch_px']:g} px) | {_value(row['miou'])} | {_value(row['ari'])} | "
                        f"{_value(row['fg_ari'])} | {_value(row['boundary_recall'])} | | |")
    probes = [f"{name}'s links {_value(r['auc'])}" for name, sec in sections.items() if sec is not None
              for r in sec["edge_auc"] if r["gt_level"] == level and r["method"] == LINKS]
    colour = next((r for r in found["edge_auc"] if r["gt_level"] == level and r["method"] == COLOUR), None)
    if probes or colour is not None:
        rows += ["", f"Edge AUC (same-{level} neighbour patches against boundary pairs): "
                 + ", ".join(probes + ([f"no-learning colour mean+std distance {_value(colour['auc'])} "
                                        f"({colour['n_same']} same, {colour['n_boundary']} boundary pairs)"]
                                       if colour is not None else [])) + "."]
    return rows


def retrieval_table(retrieval: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = ["| system | I->T R@1 | R@5 | R@10 | T->I R@1 | R@5 | R@10 | Rsum | chance I->T R@1 | zero-shot top-1 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for model, result in retrieval.items():
        r = result["retrieval"]
        zeroshot = ", ".join(zero_shot_summary(key, value)
                             for key, value in (result.get("zeroshot") or {}).items()
                             if isinstance(value, dict))
        rows.append(f"| {model} | {r['i2t_R@1']:.1f} | {r['i2t_R@5']:.1f} | {r['i2t_R@10']:.1f} | "
                    f"{r['t2i_R@1']:.1f} | {r['t2i_R@5']:.1f} | {r['t2i_R@10']:.1f} | {r['rsum']:.1f} | "
                    f"{r['chance_i2t_R@1']:.1f} | {zeroshot} |")
    return rows


# ----------------------------------------------------------------------------- findings


def tree_findings(systems: Mapping[str, SystemEvaluation]) -> list[str]:
    names = [n for n, s in systems.items() if ("tree_transformer", "standard") in s.trees]
    if not names:
        return []
    first = systems[names[0]].trees[("tree_transformer", "standard")]
    baselines = first.baselines
    best_name, best = max(baselines.items(), key=lambda kv: kv[1].sentence_f1)
    gold_spans = first.report.gold_spans_per_sentence
    out = []
    for name in names:
        tt = systems[name].trees[("tree_transformer", "standard")].report
        binary = systems[name].trees[("binary", "standard")].report
        vg = systems[name].trees[("tree_transformer", "vgnsl")].report
        vg_best = max(systems[name].trees[("tree_transformer", "vgnsl")].baselines.values(),
                      key=lambda r: r.corpus_f1)
        better, worse = (("Tree-Transformer parser", tt), ("binary lowest-link parser", binary)) \
            if tt.sentence_f1 >= binary.sentence_f1 else (("binary lowest-link parser", binary),
                                                          ("Tree-Transformer parser", tt))
        out.append(
            f"**Text, {name}.** The {better[0]} reaches {better[1].sentence_f1:.1f} sentence F1 (standard "
            f"convention, {first.report.n_sentence_f1} captions), "
            f"{_side(better[1].sentence_f1 - best.sentence_f1)} {best.prediction} ({best.sentence_f1:.1f}), "
            f"the strongest trivial baseline; the {worse[0]} reaches {worse[1].sentence_f1:.1f} "
            f"({worse[1].pred_spans_per_sentence:.2f} spans per sentence against the gold's {gold_spans:.2f}, "
            f"precision {worse[1].precision:.1f}, recall {worse[1].recall:.1f}). Under the vgnsl convention the "
            f"Tree-Transformer parser's corpus F1 is {vg.corpus_f1:.1f}, {_side(vg.corpus_f1 - vg_best.corpus_f1)} "
            f"{vg_best.prediction} ({vg_best.corpus_f1:.1f}).")
    if len(names) > 1:
        a, b = names[0], names[1]
        fa = systems[a].trees[("tree_transformer", "standard")].report.sentence_f1
        fb = systems[b].trees[("tree_transformer", "standard")].report.sentence_f1
        out.append(f"**Text, {a} against {b}.** With the same parser, {a} is {_side(fa - fb)} {b} "
                   f"({fa:.1f} against {fb:.1f} sentence F1); {b}'s links are read from its attention maps.")
    return out


def granularity_findings(systems: Mapping[str, SystemEvaluation], level: str = "object") -> list[str]:
    """Single-linkage ARI at the gt k of each system against the strongest baseline, the grid
    ceiling and the edge probe (from the ``gt_granularity`` sections)."""
    sections = {n: sec for n, s in systems.items() if (sec := _granularity(s)) is not None}
    if not sections:
        return []
    first = next(iter(sections.values()))

    def linkage(sec: dict[str, Any]) -> dict[str, Any] | None:
        return next((r for r in sec["rows"] if r["gt_level"] == level and r["method"] == SINGLE_LINKAGE
                     and r["ari"] is not None), None)

    models = {n: r for n, sec in sections.items() if (r := linkage(sec)) is not None}
    if not models:
        return []
    baselines = [r for r in first["rows"] if r["gt_level"] == level and not r["method"].startswith("model")
                 and r["ari"] is not None]
    parts = [f"{n} {r['ari']:.3f}" for n, r in models.items()]
    text = (f"**Images at the gt granularity.** Cut by single linkage into each image's {level} segments + 1, "
            f"{level} ARI is " + ", ".join(parts))
    if baselines:
        top = max(baselines, key=lambda r: r["ari"])
        name, best = next(iter(models.items()))
        text += (f"; the strongest baseline at the same k is {top['method']} ({top['ari']:.3f}), "
                 f"{_side(best['ari'] - top['ari'], digits=3, zero=0.0005)} it for {name}")
    ceiling = next((r for r in first["ceiling"] if r["gt_level"] == level and r["ari"] is not None), None)
    if ceiling is not None:
        text += (f". Giving each {ceiling['patch_px']:g}-px patch its majority label scores ARI "
                 f"{ceiling['ari']:.3f}, what the model's grid allows")
    probes = [f"{n} {r['auc']:.3f}" for n, sec in sections.items() for r in sec["edge_auc"]
              if r["gt_level"] == level and r["method"] == LINKS and r["auc"] is not None]
    colour = next((r for r in first["edge_auc"] if r["gt_level"] == level and r["method"] == COLOUR
                   and r["auc"] is not None), None)
    if probes:
        text += (". Edge AUC (links separating same-object neighbour patches from boundary pairs): "
                 + ", ".join(probes)
                 + (f", against {colour['auc']:.3f} for the no-learning colour mean+std distance"
                    if colour is not None else ""))
    return [text + "."]


def group_findings(systems: Mapping[str, SystemEvaluation], level: str = "object") -> list[str]:
    names = [n for n, s in systems.items() if s.groups is not None and level in s.groups.gt_levels]
    if not names:
        return []
    first = systems[names[0]].groups
    model = first.row(level, MODEL, "best")
    if model is None:
        return []
    baselines = [r for r in first.rows if r.gt_level == level and r.level == "best" and r.matched]
    wins = [r for r in baselines if model.miou > r.miou]
    losses = [r for r in baselines if model.miou <= r.miou]
    listed = lambda rows: ", ".join(f"{r.method} ({r.miou:.3f})" for r in rows)  # noqa: E731
    text = (f"**Images, {names[0]}.** At its best layer ({model.layer}) against the {level} masks, "
            f"{names[0]}'s groups reach mIoU {model.miou:.3f} (ARI {model.ari:.3f}, {model.n_segments:.1f} "
            f"segments per image against {model.n_gt_segments:.1f} {level}s).")
    if baselines:
        text += (f" At the same number of segments per image it is above {listed(wins) or 'no baseline'}"
                 + (f", and below {listed(losses)}: HiCLIP's groups lose to "
                    f"{'these baselines' if len(losses) > 1 else 'this baseline'} on mIoU." if losses else "."))
        best_ari = max(baselines, key=lambda r: r.ari)
        text += (f" By ARI it is {_side(model.ari - best_ari.ari, digits=3, zero=5e-4)} the best baseline, "
                 f"{best_ari.method} ({best_ari.ari:.3f}).")
    out = [text]
    for other in names[1:]:
        row = systems[other].groups.row(level, MODEL, "best")
        if row is None:
            continue
        out.append(f"**Images, {names[0]} against {other}.** {other}'s groups (from its attention maps) reach mIoU "
                   f"{row.miou:.3f} at layer {row.layer}: {names[0]} is "
                   f"{_side(model.miou - row.miou, digits=3, zero=5e-4)} it on mIoU and "
                   f"{_side(model.ari - row.ari, digits=3, zero=5e-4)} it on ARI ({model.ari:.3f} against "
                   f"{row.ari:.3f}).")
    return out


def retrieval_findings(retrieval: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names = list(retrieval)
    if not names:
        return []
    a = retrieval[names[0]]["retrieval"]
    chance = a["chance_i2t_R@1"]
    text = (f"**Retrieval, {names[0]}.** Image-to-text R@1 is {a['i2t_R@1']:.1f} (chance {chance:.1f}), "
            f"Rsum {a['rsum']:.1f}.")
    if len(names) > 1:
        b = retrieval[names[1]]["retrieval"]
        text += (f" {names[0]} is {_side(a['rsum'] - b['rsum'])} {names[1]} in Rsum ({a['rsum']:.1f} against "
                 f"{b['rsum']:.1f})" + (f": here {names[0]} loses." if a["rsum"] < b["rsum"] else "."))
    zero = retrieval[names[0]].get("zeroshot") or {}
    above = [zero_shot_summary(k, v) for k, v in zero.items() if isinstance(v, dict)]
    if above:
        text += " Zero-shot top-1: " + ", ".join(above) + "."
    return [text]


# ----------------------------------------------------------------------------- figures


def figure_lines(index: Mapping[str, Any], out: Path) -> list[str]:
    """Markdown of every figure in ``index`` (paths relative to ``out``), each with its caption."""
    lines: list[str] = []
    quantitative = index.get("quantitative") or {}
    number = 0

    def picture(path: str, caption: str) -> None:
        nonlocal number
        number += 1
        relative = Path(path).resolve().relative_to(out.resolve()).as_posix()
        lines.extend([f"![{Path(path).stem}]({relative})", "", f"*Figure {number}. {caption}*", ""])

    if quantitative.get("files"):
        lines += ["### Scores", ""]
        for stem, path in quantitative["files"].items():
            picture(path, quantitative["captions"][stem])
    for reason in quantitative.get("skipped", []):
        lines += [f"(No figure for {reason}.)", ""]
    captions = index.get("sample_captions", {})
    for sample_id, files in (index.get("samples") or {}).items():
        text = (index.get("sample_text") or {}).get(sample_id)
        lines += [f"### Sample {sample_id}" + (f": \"{text}\"" if text else ""), ""]
        for name, path in files.items():
            if Path(path).suffix.lower() != ".png":
                continue
            picture(path, f"{sample_id}: " + captions.get(name, name))
    return lines


def demo_report(systems: Mapping[str, SystemEvaluation], retrieval: Mapping[str, Mapping[str, Any]],
                checkpoints: Mapping[str, Path], figures: Mapping[str, Any] | None, seconds: float,
                out: Path, data: str = "") -> str:
    """The whole ``report.md``."""
    first = next(iter(systems.values()))
    n_images = first.groups.n_records if first.groups is not None else len(first.predictions)
    n_captions = sum(1 for _ in first.predictions.captions())
    findings = (tree_findings(systems) + group_findings(systems) + granularity_findings(systems)
                + retrieval_findings(retrieval))
    lines = ["# hiclip demo report", "",
             f"Synthetic shapes test split ({n_images} images, {n_captions} captions), {seconds:.0f} s. "
             "Checkpoints: " + ", ".join(f"{m} = `{p}`" for m, p in checkpoints.items()) + ".", "",
             "## Findings", ""]
    lines += [f"- {f}" for f in findings] + [""]
    lines += ["## Trees against the exact gold trees", "",
              "standard = Kim et al. 2019 convention (sentence F1 headline); vgnsl = Shi et al. 2019 "
              "(corpus F1 headline). Baselines are scored on the same sentences.", "",
              *tree_table(systems), "", "## Image groups against the exact masks (best layer per level)", ""]
    for level in GT_LEVELS:
        if any(s.groups is not None and level in s.groups.gt_levels for s in systems.values()):
            lines += [*group_table(systems, level), ""]
    lines += [f"Segmentation baselines are run per image at the number of segments {next(iter(systems))} "
              "predicted at its best layer, so they have no layer of their own.", ""]
    if any(_granularity(s) is not None for s in systems.values()):
        lines += ["## Image groups at the ground truth's granularity", "",
                  "Every method cut into each image's number of gt segments + 1 (the background): the "
                  "models by single linkage over their links summed across layers, and by the layer whose "
                  "number of groups is nearest; every baseline at the same k. ARI over k is the k-free "
                  "hierarchy score (ARI averaged over the k range; a dash: not run over the range). "
                  "The ceiling is what any partition on that patch grid can reach.", ""]
        for level in GT_LEVELS:
            table = granularity_table(systems, level)
            if table:
                lines += [*table, ""]
    lines += [
              "## Retrieval (several captions per image)", "",
              "## Retrieval (several captions per image)", "", *retrieval_table(retrieval), ""]
    if figures is not None:
        lines += ["## Figures", "",
                  "Every number in a figure is the table's (same function, convention, parameters and "
                  "sentences; `figures/figures.json` lists each with its n).", ""]
        lines += figure_lines(figures, out)
    return "\n".join(lines).rstrip() + "\n"
