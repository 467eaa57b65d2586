"""What a generated caption claims, and whether those claims hold of a scene.

The grammar records a ``Meaning`` while it builds a caption. ``holds`` checks it against a
scene's ``Facts`` by trying every assignment of mentioned phrases to distinct groups, so a
hard negative is only kept when it is really false of the image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations

from hiclip.data.shapes_scene import Facts, GroupFacts


@dataclass
class Mention:
    """A noun phrase naming one group, with the attributes it states (name -> value)."""

    attrs: dict[str, object] = field(default_factory=dict)
    group: int = -1  # index of the group the describer meant (not used by ``holds``)


@dataclass
class Meaning:
    mentions: list[Mention] = field(default_factory=list)
    relations: list[tuple[str, int, int]] = field(default_factory=list)  # (relation, mention, mention)
    positions: list[tuple[str, int]] = field(default_factory=list)  # (position, mention)
    background: str | None = None


def group_attribute(group: GroupFacts, name: str) -> object:
    """The value of attribute ``name`` (as stated by mentions) for ``group``."""
    if name.startswith("part_"):
        if group.part is None:
            return None
        return getattr(group.part, name[len("part_"):])
    return getattr(group, name)


def mention_matches(mention: Mention, group: GroupFacts) -> bool:
    return all(group_attribute(group, k) == v for k, v in mention.attrs.items())


def holds(meaning: Meaning, facts: Facts) -> bool:
    """True when some assignment of mentions to distinct groups makes every claim true."""
    n = len(meaning.mentions)
    if n > len(facts.groups):
        return False
    if meaning.background is not None and meaning.background != facts.background:
        return False
    for assignment in permutations(range(len(facts.groups)), n):
        if not all(mention_matches(m, facts.groups[g]) for m, g in zip(meaning.mentions, assignment)):
            continue
        if not all(rel in facts.relations.get((assignment[a], assignment[b]), ())
                   for rel, a, b in meaning.relations):
            continue
        if not all(pos in facts.positions.get(assignment[a], ()) for pos, a in meaning.positions):
            continue
        return True
    return False
