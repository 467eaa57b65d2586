"""Hard negative captions: describe a minimally altered scene with the positive caption's choices.

Alterations that keep the bag of words (swapping colours, shapes, textures or part colours
between groups, flipping relations) come first, then count, size and position changes, then
recolouring or reshaping a group. A candidate is kept only if its meaning is false of the
original scene (``shapes_meaning.holds``) and its text differs from every positive caption.
Alterations of attributes that no positive caption states are not tried: they cannot change
the text.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator, TypeVar

from hiclip.data.shapes_grammar import describe
from hiclip.data.shapes_meaning import Meaning, holds
from hiclip.data.shapes_scene import Facts, GroupFacts, Part
from hiclip.data.shapes_vocab import COLOURS, OPPOSITE, SHAPES

_FLIP_POSITION = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "middle": "middle"}

Stated = set[tuple[int, str]]  # (group index, attribute) pairs some positive caption states
Alteration = Callable[[Facts, Stated, random.Random], Iterator[Facts]]
T = TypeVar("T", Facts, GroupFacts, Part)


def _replace(obj: T, **changes) -> T:
    """``dataclasses.replace`` for the plain dataclasses ``Facts``, ``GroupFacts`` and ``Part`` (no
    ``__post_init__``, no ``init=False`` fields), without its per-call field introspection (~2x cheaper)."""
    return type(obj)(**{**obj.__dict__, **changes})


def _copy(facts: Facts) -> Facts:
    """A copy whose group list can be changed without touching ``facts`` (groups are replaced, not mutated)."""
    return _replace(facts, groups=list(facts.groups))


def _swap(attr: str) -> Alteration:
    def alter(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
        n = len(facts.groups)
        for i, j in [(i, j) for i in range(n) for j in range(i + 1, n)]:
            a, b = facts.groups[i], facts.groups[j]
            if getattr(a, attr) == getattr(b, attr) or not ({(i, attr), (j, attr)} & stated):
                continue
            out = _copy(facts)
            changes_a, changes_b = {attr: getattr(b, attr)}, {attr: getattr(a, attr)}
            if attr == "colour":  # a tone travels with its colour
                changes_a["tone"], changes_b["tone"] = b.tone, a.tone
            out.groups[i] = _replace(a, **changes_a)
            out.groups[j] = _replace(b, **changes_b)
            yield out
    return alter


def _swap_part_colour(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    for i, g in enumerate(facts.groups):
        if g.part is not None and {(i, "colour"), (i, "part_colour")} & stated:
            out = _copy(facts)
            out.groups[i] = _replace(g, colour=g.part.colour, tone="", part=_replace(g.part, colour=g.colour))
            yield out


def _flip_relations(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    if (-1, "relation") in stated:
        out = _copy(facts)
        out.relations = {k: [OPPOSITE[r] for r in v] for k, v in facts.relations.items()}
        yield out


def _flip_positions(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    if (-1, "position") in stated:
        out = _copy(facts)
        out.positions = {k: [_FLIP_POSITION[p] for p in v] for k, v in facts.positions.items()}
        yield out


def _change_count(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    for i, g in enumerate(facts.groups):
        for count in (1, 2, 3):
            if count != g.count:
                out = _copy(facts)
                arrangement = "single" if count == 1 else (g.arrangement if g.count > 1 else "row")
                out.groups[i] = _replace(g, count=count, arrangement=arrangement,
                                        part=None if count > 1 else g.part)
                yield out


def _change_size(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    for i, g in enumerate(facts.groups):
        if g.size != "medium" and (i, "size") in stated:
            out = _copy(facts)
            out.groups[i] = _replace(g, size="large" if g.size == "small" else "small")
            yield out


def _recolour(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    for i, g in enumerate(facts.groups):
        if (i, "colour") in stated:
            others = [c for c in COLOURS if c != g.colour and (g.part is None or c != g.part.colour)]
            out = _copy(facts)
            out.groups[i] = _replace(g, colour=rng.choice(others), tone="")
            yield out


def _reshape(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    for i, g in enumerate(facts.groups):
        out = _copy(facts)
        out.groups[i] = _replace(g, shape=rng.choice([s for s in SHAPES if s != g.shape]))
        yield out


def _recolour_part(facts: Facts, stated: Stated, rng: random.Random) -> Iterator[Facts]:
    for i, g in enumerate(facts.groups):
        if g.part is not None and (i, "part_colour") in stated:
            others = [c for c in COLOURS if c not in (g.colour, g.part.colour)]
            out = _copy(facts)
            out.groups[i] = _replace(g, part=Part(g.part.kind, rng.choice(others), g.part.shape, g.part.orientation))
            yield out


def _stated(meanings: list[Meaning]) -> Stated:
    out: Stated = set()
    for meaning in meanings:
        for mention in meaning.mentions:
            out.update((mention.group, attr) for attr in mention.attrs)
        if meaning.relations:
            out.add((-1, "relation"))
        if meaning.positions:
            out.add((-1, "position"))
    return out


def negative_captions(facts: Facts, caption_seeds: list[int], positives: list[Meaning], texts: set[str],
                      k: int, rng: random.Random, min_words: int = 3, max_words: int = 20) -> list[str]:
    """Up to ``k`` distinct false captions of the scene ``facts``.

    Negative ``n`` reuses the choices of positive caption ``n % len(caption_seeds)``;
    ``positives`` are the meanings of the positive captions, ``texts`` their strings.
    """
    if k <= 0:
        return []
    stated = _stated(positives)
    same_words: list[Alteration] = [_swap("colour"), _swap("shape"), _swap("texture"), _swap_part_colour,
                                    _flip_relations]
    rng.shuffle(same_words)
    changed: list[Alteration] = [_change_count, _change_size, _flip_positions]
    rng.shuffle(changed)
    fallback: list[Alteration] = [_recolour, _reshape, _recolour_part]
    out: list[str] = []
    seen = set(texts)
    # First pass: at most one negative per kind of alteration, for variety; second pass: any.
    for one_per_kind in (True, False):
        for alter in same_words + changed + fallback:
            for altered in alter(facts, stated, rng):
                if len(out) >= k:
                    return out
                seed = caption_seeds[len(out) % len(caption_seeds)]
                caption = describe(altered, seed, min_words, max_words, with_tree=False)
                if caption.text in seen or holds(caption.meaning, facts):
                    continue
                seen.add(caption.text)
                out.append(caption.text)
                if one_per_kind:
                    break
    return out
