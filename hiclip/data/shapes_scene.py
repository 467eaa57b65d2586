"""Sampling a synthetic scene: groups of identical objects, optional parts, and their layout.

A scene is sampled first and described afterwards (``shapes_grammar``), so captions are true
by construction. Scalar decisions use a ``random.Random`` (much cheaper per draw than numpy's
generator, which the renderer keeps for arrays). Geometry is in pixels of a square canvas of side ``size``; boxes are
``(y0, x0, y1, x1)`` with exclusive ends.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from hiclip.data.shapes_vocab import (
    COLOURS,
    INNER_SHAPES,
    PART_KINDS,
    SHAPES,
    TEXTURE_WEIGHTS,
    TEXTURES,
    TONED_COLOURS,
    TONES,
    BACKGROUNDS,
)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Part:
    """A region inside an object: an inner shape, a band across it, or its border."""

    kind: str
    colour: str
    shape: str | None = None  # inner parts only
    orientation: str | None = None  # bands only: "horizontal" | "vertical"


@dataclass(frozen=True)
class Look:
    """What the objects of one group share."""

    shape: str
    colour: str
    tone: str  # "" or one of TONES
    texture: str
    size: int  # side of each object's square box, in pixels
    part: Part | None = None
    stripe_axis: int = 0  # texture orientation for striped objects (0 rows, 1 columns, 2 diagonal)


@dataclass
class Group:
    """``count`` identical objects in a row or a column (``arrangement`` "single" when one)."""

    look: Look
    count: int
    arrangement: str
    boxes: list[Box]

    @property
    def bbox(self) -> Box:
        ys0, xs0, ys1, xs1 = zip(*self.boxes)
        return min(ys0), min(xs0), max(ys1), max(xs1)


@dataclass
class Scene:
    size: int
    groups: list[Group]
    background: str
    background_colour: tuple[int, int, int]


@dataclass(frozen=True)
class SceneLimits:
    """Object sizes as fractions of the canvas side (objects span several 8x8-grid patches)."""

    min_object: float = 0.25
    max_object: float = 0.6
    max_plural_object: float = 0.36
    min_part_object: float = 0.34
    small_below: float = 0.28  # sizes < this fraction are "small"
    large_from: float = 0.38  # sizes >= this fraction are "large"
    margin: float = 0.03
    object_gap: float = 0.05
    group_gap: float = 0.06
    group_weights: tuple[float, float, float] = (0.3, 0.45, 0.25)
    part_probability: float = 0.55


def size_class(size: int, canvas: int, limits: SceneLimits = SceneLimits()) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` for an object box of side ``size``."""
    if size < limits.small_below * canvas:
        return "small"
    if size >= limits.large_from * canvas:
        return "large"
    return "medium"


def _split(rng: random.Random, cell: Box, axis: int, parts: int, gap: int) -> list[Box]:
    """Cut ``cell`` into ``parts`` pieces along ``axis`` (0 rows, 1 columns) with jittered cuts."""
    y0, x0, y1, x1 = cell
    lo, hi = (y0, y1) if axis == 0 else (x0, x1)
    span = hi - lo - gap * (parts - 1)
    weights = [rng.uniform(0.8, 1.2) for _ in range(parts)]
    total = sum(weights)
    out: list[Box] = []
    start = lo
    for w in weights:
        end = start + int(span * w / total)
        out.append((start, x0, end, x1) if axis == 0 else (y0, start, y1, end))
        start = end + gap
    return out


def _layout(rng: random.Random, size: int, n_groups: int, limits: SceneLimits) -> list[Box]:
    m = max(1, round(limits.margin * size))
    gap = max(2, round(limits.group_gap * size))
    canvas: Box = (m, m, size - m, size - m)
    if n_groups == 1:
        return [canvas]
    if n_groups == 2:
        return _split(rng, canvas, rng.randrange(2), 2, gap)
    style = rng.randrange(3)
    if style < 2:  # three rows or three columns
        return _split(rng, canvas, style, 3, gap)
    axis = rng.randrange(2)
    first, second = _split(rng, canvas, axis, 2, gap)
    if rng.random() < 0.5:
        return _split(rng, first, 1 - axis, 2, gap) + [second]
    return [first] + _split(rng, second, 1 - axis, 2, gap)


def _fit(rng: random.Random, cell: Box, size: int, limits: SceneLimits) -> tuple[int, str, int] | None:
    """Pick (count, arrangement, object size) that fits ``cell``; None if nothing fits."""
    ch, cw = cell[2] - cell[0], cell[3] - cell[1]
    gap = max(2, round(limits.object_gap * size))
    smin = round(limits.min_object * size)
    options: list[tuple[int, str, int, float]] = []
    for count, weight in ((1, 0.55), (2, 0.3), (3, 0.15)):
        for arrangement in (("single",) if count == 1 else ("row", "column")):
            along, across = (cw, ch) if arrangement in ("single", "row") else (ch, cw)
            cap = limits.max_object if count == 1 else limits.max_plural_object
            smax = min(across, (along - gap * (count - 1)) // count, round(cap * size))
            if smax >= smin:
                options.append((count, arrangement, smax, weight))
    if not options:
        return None
    count, arrangement, smax, _ = rng.choices(options, weights=[o[3] for o in options])[0]
    return count, arrangement, rng.randint(smin, smax)


def _place(rng: random.Random, cell: Box, count: int, arrangement: str, s: int, gap: int) -> list[Box]:
    ch, cw = cell[2] - cell[0], cell[3] - cell[1]
    gh = s if arrangement != "column" else count * s + (count - 1) * gap
    gw = s if arrangement != "row" else count * s + (count - 1) * gap
    y = cell[0] + rng.randint(0, ch - gh)
    x = cell[1] + rng.randint(0, cw - gw)
    boxes = []
    for k in range(count):
        dy, dx = (k * (s + gap), 0) if arrangement == "column" else (0, k * (s + gap))
        boxes.append((y + dy, x + dx, y + dy + s, x + dx + s))
    return boxes


def _look(rng: random.Random, s: int, count: int, size: int, taken: set[tuple[str, str]],
          limits: SceneLimits) -> Look:
    while True:
        shape = rng.choice(SHAPES)
        colour = rng.choice(_COLOUR_NAMES)
        if (shape, colour) not in taken:
            break
    tone = rng.choice(TONES) if colour in TONED_COLOURS and rng.random() < 0.35 else ""
    texture = rng.choices(TEXTURES, weights=TEXTURE_WEIGHTS)[0]
    part = None
    if count == 1 and s >= limits.min_part_object * size and rng.random() < limits.part_probability:
        kind = rng.choice(PART_KINDS)
        part = Part(
            kind=kind,
            colour=rng.choice([c for c in _COLOUR_NAMES if c != colour]),
            shape=rng.choice(INNER_SHAPES) if kind == "inner" else None,
            orientation=rng.choice(("horizontal", "vertical")) if kind == "band" else None,
        )
    return Look(shape, colour, tone, texture, s, part, stripe_axis=rng.randrange(3))


_COLOUR_NAMES = tuple(COLOURS)


def sample_scene(rng: random.Random, size: int = 64, limits: SceneLimits = SceneLimits(),
                 max_groups: int = 3) -> Scene:
    """Sample groups, their looks and a non-overlapping layout on a ``size`` x ``size`` canvas.

    Groups are distinct in (shape, colour), so every group has a description that picks it out.
    """
    weights = limits.group_weights[:max_groups]
    n_groups = rng.choices(range(1, len(weights) + 1), weights=weights)[0]
    cells = _layout(rng, size, n_groups, limits)
    gap = max(2, round(limits.object_gap * size))
    taken: set[tuple[str, str]] = set()
    groups: list[Group] = []
    for cell in cells:
        fit = _fit(rng, cell, size, limits)
        if fit is None:
            continue
        count, arrangement, s = fit
        look = _look(rng, s, count, size, taken, limits)
        taken.add((look.shape, look.colour))
        groups.append(Group(look, count, arrangement, _place(rng, cell, count, arrangement, s, gap)))
    background = rng.choice(BACKGROUNDS)
    # Muted background colours of any brightness: bright objects on bright backgrounds and dark
    # on dark both occur, so brightness alone does not separate figure from ground.
    grey = rng.uniform(40, 215)
    bg = tuple(int(min(255.0, max(0.0, grey + rng.gauss(0, 25)))) for _ in range(3))
    return Scene(size, groups, background, bg)  # type: ignore[arg-type]


@dataclass
class GroupFacts:
    """What can truthfully be said about one group, plus the mask ids it occupies."""

    shape: str
    colour: str
    tone: str
    texture: str
    size: str  # size class
    count: int
    arrangement: str
    part: Part | None
    group_id: int = 0
    object_ids: tuple[int, ...] = ()
    part_ids: tuple[int, ...] = ()


@dataclass
class Facts:
    """The scene as the grammar sees it: group attributes, pairwise relations, positions."""

    groups: list[GroupFacts]
    relations: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    positions: dict[int, list[str]] = field(default_factory=dict)
    background: str = ""


def relations_between(a: Box, b: Box, size: int) -> list[str]:
    """The spatial relations that hold of box ``a`` with respect to box ``b``.

    "left"/"right"/"above"/"below" need the boxes fully separated along that axis, so a flipped
    relation is always false; "next" needs them close and overlapping along the other axis.
    """
    out: list[str] = []
    if a[3] <= b[1]:
        out.append("left")
    if a[1] >= b[3]:
        out.append("right")
    if a[2] <= b[0]:
        out.append("above")
    if a[0] >= b[2]:
        out.append("below")
    near = 0.2 * size
    y_overlap = min(a[2], b[2]) - max(a[0], b[0])
    x_overlap = min(a[3], b[3]) - max(a[1], b[1])
    gap_x = max(b[1] - a[3], a[1] - b[3])
    gap_y = max(b[0] - a[2], a[0] - b[2])
    if (0 <= gap_x <= near and y_overlap > 0) or (0 <= gap_y <= near and x_overlap > 0):
        out.append("next")
    return out


def positions_of(box: Box, size: int) -> list[str]:
    """Image positions that hold of ``box``: entirely in a half, or centred."""
    y0, x0, y1, x1 = box
    out = []
    half = size / 2
    if x1 <= half:
        out.append("left")
    if x0 >= half:
        out.append("right")
    if y1 <= half:
        out.append("top")
    if y0 >= half:
        out.append("bottom")
    if abs((x0 + x1) / 2 - half) <= 0.12 * size and abs((y0 + y1) / 2 - half) <= 0.12 * size:
        out.append("middle")
    return out


def scene_facts(scene: Scene, ids: list[tuple[int, tuple[int, ...], tuple[int, ...]]],
                limits: SceneLimits = SceneLimits()) -> Facts:
    """Describe ``scene`` for the grammar; ``ids[i]`` = (group id, object ids, part ids) of group i."""
    groups = []
    for g, (gid, oids, pids) in zip(scene.groups, ids):
        groups.append(GroupFacts(
            g.look.shape, g.look.colour, g.look.tone, g.look.texture,
            size_class(g.look.size, scene.size, limits), g.count, g.arrangement, g.look.part,
            gid, oids, pids,
        ))
    relations = {}
    for i, a in enumerate(scene.groups):
        for j, b in enumerate(scene.groups):
            if i != j:
                relations[(i, j)] = relations_between(a.bbox, b.bbox, scene.size)
    positions = {i: positions_of(g.bbox, scene.size) for i, g in enumerate(scene.groups)}
    return Facts(groups, relations, positions, scene.background)
