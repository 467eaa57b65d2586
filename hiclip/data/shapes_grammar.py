"""The caption grammar: a scene's ``Facts`` -> a caption with its exact labeled constituency tree.

Every random decision is keyed by name (``"g1.colour"``, ``"form"``...) and derived from one
caption seed, so describing a slightly altered scene with the same seed makes the same choices:
that is how hard negatives differ from the positive caption in exactly one fact.

Constructions (PTB labels): flat NPs with reordered optional modifiers, light/dark colour ADJPs,
numerals and QPs, collective NPs ("a row of three stars"), parts attached by PP ("with"), SBAR
("that has") or VP ("containing"), group arrangements (ADVP "side by side"), relation PPs
("to the left of", "above", "next to"), "there is/are" sentences, copular S, inverted SINV
("above the circle is a star"), coordination, chained relations and "next to each other".
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations

from hiclip.data.phrase_tree import Node
from hiclip.data.shapes_meaning import Meaning, Mention
from hiclip.data.shapes_scene import Facts, GroupFacts
from hiclip.data.shapes_vocab import (
    BACKGROUND_WORDS,
    COLOUR_WORDS,
    NUMBER_WORDS,
    PART_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    TEXTURE_WORDS,
)


_MASK64 = (1 << 64) - 1


@lru_cache(maxsize=65536)
def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-mixed 64-bit hash of an integer."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


# key -> uniform tables of recent (seed, salt) bases. Hard negatives are described with their
# positive caption's seed, so most of their decisions were already drawn for the positive.
_UNIFORMS: dict[int, dict[str, float]] = {}
_UNIFORMS_KEPT = 64


def _uniforms(base: int) -> dict[str, float]:
    table = _UNIFORMS.get(base)
    if table is None:
        if len(_UNIFORMS) >= _UNIFORMS_KEPT:
            _UNIFORMS.clear()
        table = _UNIFORMS[base] = {}
    return table


class Choices:
    """Named, reproducible random decisions derived from one integer seed."""

    def __init__(self, seed: int, verbosity: float = 1.0, salt: int = 0) -> None:
        self.seed = seed
        self.verbosity = verbosity
        self._base = _mix64((seed * 0x9E3779B97F4A7C15 + salt) & _MASK64)
        self._drawn = _uniforms(self._base)

    def u(self, key: str) -> float:
        """A uniform number in [0, 1) that depends only on (seed, salt, key)."""
        value = self._drawn.get(key)
        if value is None:
            value = self._drawn[key] = _mix64(self._base ^ _key_hash(key)) / 18446744073709551616.0
        return value

    def optional(self, key: str, p: float) -> bool:
        """Include an optional element with probability ``p`` scaled by the verbosity."""
        return self.u(key) < p * self.verbosity

    def coin(self, key: str, p: float) -> bool:
        return self.u(key) < p

    def pick(self, key: str, options, weights=None):
        options = list(options)
        if weights is None:
            return options[int(self.u(key) * len(options))]
        total = float(sum(weights))
        x = self.u(key) * total
        for option, w in zip(options, weights):
            x -= w
            if x < 0:
                return option
        return options[-1]


@dataclass
class Caption:
    """A generated caption: ``tokens`` are the tree's leaves, ``text`` is ``" ".join(tokens)``."""

    tokens: list[str]
    tree: str
    phrases: list[dict]
    meaning: Meaning

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def word(tag: str, text: str) -> Node:
    """``phrase_tree.word``, built positionally (dataclass keyword/default-factory calls cost ~2x)."""
    return Node(tag, [], text, [])


def phrase(label: str, *children: Node, refs: list[tuple[str, tuple[int, ...]]] | None = None) -> Node:
    """``phrase_tree.phrase``, built positionally."""
    if not children:
        raise ValueError(f"empty constituent {label}")
    return Node(label, list(children), None, list(refs) if refs else [])


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _first_word(nodes: list[Node]) -> str:
    node = nodes[0]
    while node.word is None:  # constituents are never empty
        node = node.children[0]
    return node.word


def _leaves(tree: Node) -> list[str]:
    """``phrase_tree.words(tree)``, cheaper (the grammar needs it for every attempt)."""
    if tree.word is not None:
        return [tree.word]
    out: list[str] = []

    def walk(node: Node) -> None:
        for child in node.children:
            if child.word is None:
                walk(child)
            else:
                out.append(child.word)

    walk(tree)
    return out


def _linearise(tree: Node) -> tuple[str, list[dict]]:
    """``(phrase_tree.to_ptb(tree), phrase_tree.referring_spans(tree))`` in one cheaper walk."""
    if tree.word is not None:
        return f"({tree.label} {tree.word})", []
    found: list[dict] = []
    position = 0

    def walk(node: Node) -> str:
        nonlocal position
        start = position
        pending = []
        for level, ids in node.refs:  # pre-order: a phrase's refs come before its children's
            entry = {"span": None, "level": level, "mask_ids": list(ids)}
            found.append(entry)
            pending.append(entry)
        parts = []
        for child in node.children:
            if child.word is None:
                parts.append(walk(child))
            else:
                position += 1
                parts.append(f"({child.label} {child.word})")
        for entry in pending:
            entry["span"] = [start, position]
        return f"({node.label} {' '.join(parts)})"

    return walk(tree), found


class _Describer:
    """Builds one caption tree for ``facts`` and records its meaning."""

    def __init__(self, facts: Facts, ch: Choices) -> None:
        self.facts = facts
        self.ch = ch
        self.meaning = Meaning()
        self.plural: list[bool] = []  # grammatical number of each mention's NP, for agreement
        self._collective = False  # set by _plural_np: "a pair of ..." takes a singular verb

    # ----- noun phrases for groups and parts -------------------------------------------------
    def _must_colour(self, i: int) -> bool:
        shape = self.facts.groups[i].shape
        return any(g.shape == shape for j, g in enumerate(self.facts.groups) if j != i)

    def _modifiers(self, i: int, g: GroupFacts, attrs: dict) -> list[Node]:
        ch = self.ch
        mods: list[Node] = []
        if g.size != "medium" and ch.optional(f"g{i}.size", 0.45):
            mods.append(word("JJ", ch.pick(f"g{i}.size_word", SIZE_WORDS[g.size])))
            attrs["size"] = g.size
        texture: list[Node] = []
        if ch.optional(f"g{i}.texture", 0.55 if g.texture != "solid" else 0.08):
            texture = [word("JJ", ch.pick(f"g{i}.texture_word", TEXTURE_WORDS[g.texture]))]
            attrs["texture"] = g.texture
        colour: list[Node] = []
        if self._must_colour(i) or ch.optional(f"g{i}.colour", 0.85):
            name = ch.pick(f"g{i}.colour_word", COLOUR_WORDS.get(g.colour, (g.colour,)))
            attrs["colour"] = g.colour
            if g.tone and ch.optional(f"g{i}.tone", 0.6):
                colour = [phrase("ADJP", word("JJ", g.tone), word("JJ", name))]
                attrs["tone"] = g.tone
            else:
                colour = [word("JJ", name)]
        if ch.coin(f"g{i}.order", 0.6):
            return mods + texture + colour
        return mods + colour + texture

    def _shape_noun(self, i: int, shape: str, plural: bool) -> Node:
        synonyms = SHAPE_WORDS[shape]
        weights = [3.0] + [1.0] * (len(synonyms) - 1)
        singular, plural_form = self.ch.pick(f"g{i}.noun", synonyms, weights)
        return word("NNS", plural_form) if plural else word("NN", singular)

    def _part_np(self, i: int, g: GroupFacts, attrs: dict) -> Node:
        ch, part = self.ch, g.part
        assert part is not None
        attrs["part_kind"] = part.kind
        mods: list[Node] = []
        if part.kind == "band" and ch.optional(f"g{i}.part_orient", 0.4):
            mods.append(word("JJ", part.orientation))
            attrs["part_orientation"] = part.orientation
        if ch.optional(f"g{i}.part_colour", 0.9):
            mods.append(word("JJ", ch.pick(f"g{i}.part_colour_word", COLOUR_WORDS.get(part.colour, (part.colour,)))))
            attrs["part_colour"] = part.colour
        if part.kind == "inner":
            noun = word("NN", SHAPE_WORDS[part.shape][0][0])
            attrs["part_shape"] = part.shape
        else:
            noun = word("NN", ch.pick(f"g{i}.part_noun", PART_WORDS[part.kind]))
        tail = mods + [noun]
        node = phrase("NP", word("DT", _article(_first_word(tail))), *tail, refs=[("part", g.part_ids[-1:])])
        if part.kind == "inner" and ch.optional(f"g{i}.part_where", 0.35):
            where = phrase("PP", word("IN", "in"),
                           phrase("NP", word("DT", "the"), word("NN", ch.pick(f"g{i}.centre", ("middle", "center")))))
            node = phrase("NP", node, where, refs=[("part", g.part_ids[-1:])])
        return node

    def group_np(self, i: int, definite: bool = False, allow_part: bool = True) -> tuple[Node, int]:
        """An NP naming group ``i``; returns it and the index of its mention.

        ``allow_part=False`` for a conjunct followed by "and": "a cross with a circle and a
        triangle" would also read as a cross holding both.
        """
        g = self.facts.groups[i]
        ch = self.ch
        attrs: dict = {"shape": g.shape}
        refs_obj = ("object", g.object_ids)
        refs_grp = ("group", (g.group_id,))
        mods = self._modifiers(i, g, attrs)
        if g.count == 1:
            attrs["count"] = 1
            noun = self._shape_noun(i, g.shape, plural=False)
            det_kind = ch.pick(f"g{i}.det", ("a", "one", "the"), (0.77, 0.08, 0.15 if definite else 0.0))
            det = word("CD", "one") if det_kind == "one" else word(
                "DT", "the" if det_kind == "the" else _article(_first_word(mods + [noun])))
            node = phrase("NP", det, *mods, noun, refs=[refs_obj, refs_grp])
            if g.part is not None and allow_part and ch.optional(f"g{i}.part", 0.7):
                node = self._attach_part(i, g, node, attrs, [refs_obj, refs_grp])
        else:
            attrs["count"] = g.count
            self._collective = False
            node = self._plural_np(i, g, mods, attrs, definite, refs_obj, refs_grp)
        self.plural.append(g.count > 1 and not self._collective)
        self.meaning.mentions.append(Mention(attrs, group=i))
        return node, len(self.meaning.mentions) - 1

    def _attach_part(self, i: int, g: GroupFacts, base: Node, attrs: dict, refs) -> Node:
        ch = self.ch
        part_np = self._part_np(i, g, attrs)
        how = ch.pick(f"g{i}.part_how", ("with", "that", "containing"),
                      (0.6, 0.25, 0.15 if g.part.kind == "inner" else 0.0))
        if how == "with":
            attached = phrase("PP", word("IN", "with"), part_np)
        elif how == "that":
            attached = phrase("SBAR", phrase("WHNP", word("WDT", "that")),
                              phrase("S", phrase("VP", word("VBZ", "has"), part_np)))
        else:
            attached = phrase("VP", word("VBG", "containing"), part_np)
        return phrase("NP", base, attached, refs=list(refs))

    def _plural_np(self, i: int, g: GroupFacts, mods: list[Node], attrs: dict, definite: bool,
                   refs_obj, refs_grp) -> Node:
        ch = self.ch
        noun = self._shape_noun(i, g.shape, plural=True)
        number = word("CD", NUMBER_WORDS[g.count])
        collectives = ["group"]
        if g.count == 2:
            collectives.append("pair")
        if g.arrangement in ("row", "column"):
            collectives.append(g.arrangement)
        if ch.optional(f"g{i}.collective", 0.25):
            kind = ch.pick(f"g{i}.collective_kind", collectives)
            if kind in ("row", "column"):
                attrs["arrangement"] = kind
            inner_words = ([] if kind == "pair" else [number]) + mods + [noun]
            inner = phrase("NP", *inner_words, refs=[refs_obj])
            head = phrase("NP", word("DT", "a"), word("NN", kind))
            self._collective = True
            return phrase("NP", head, phrase("PP", word("IN", "of"), inner), refs=[refs_grp, refs_obj])
        if ch.optional(f"g{i}.exactly", 0.06):
            number = phrase("QP", word("RB", "exactly"), number)
        lead = [word("DT", "the")] if definite and ch.coin(f"g{i}.the", 0.2) else []
        node = phrase("NP", *lead, number, *mods, noun, refs=[refs_grp, refs_obj])
        if ch.optional(f"g{i}.arrangement", 0.3):
            attrs["arrangement"] = g.arrangement
            if g.arrangement == "row":
                how = ch.pick(f"g{i}.arr_how", ("side", "in"))
                mod = (phrase("ADVP", word("RB", "side"), word("IN", "by"), word("RB", "side")) if how == "side"
                       else phrase("PP", word("IN", "in"), phrase("NP", word("DT", "a"), word("NN", "row"))))
            else:
                how = ch.pick(f"g{i}.arr_how", ("stacked", "in"))
                mod = (phrase("VP", word("VBN", "stacked"), phrase("ADVP", word("RB", "vertically")))
                       if how == "stacked"
                       else phrase("PP", word("IN", "in"), phrase("NP", word("DT", "a"), word("NN", "column"))))
            node = phrase("NP", node, mod, refs=[refs_grp, refs_obj])
        return node

    # ----- relations and positions ---------------------------------------------------------
    def relation_pp(self, key: str, rel: str, obj: Node) -> Node:
        ch = self.ch
        if rel in ("left", "right"):
            side = phrase("NP", word("DT", "the"), word("NN", rel))
            of = phrase("NP", side, phrase("PP", word("IN", "of"), obj))
            if ch.coin(f"{key}.on", 0.3):
                return phrase("PP", word("IN", "on"), of)
            return phrase("PP", word("TO", "to"), of)
        if rel == "above":
            return phrase("PP", word("IN", ch.pick(f"{key}.w", ("above", "over"), (3, 1))), obj)
        if rel == "below":
            return phrase("PP", word("IN", ch.pick(f"{key}.w", ("below", "under", "beneath", "underneath"),
                                                   (3, 2, 1, 1))), obj)
        how = ch.pick(f"{key}.w", ("next", "beside", "near"), (0.5, 0.3, 0.2))
        if how == "next":
            return phrase("PP", word("JJ", "next"), phrase("PP", word("TO", "to"), obj))
        return phrase("PP", word("IN", how), obj)

    def relate(self, key: str, rel: str, subj_mention: int, obj_mention: int, obj: Node) -> Node:
        """A relation PP headed by ``obj``, recording that the subject stands in ``rel`` to it."""
        self.meaning.relations.append((rel, subj_mention, obj_mention))
        return self.relation_pp(key, rel, obj)

    def position_pp(self, pos: str) -> Node:
        if pos in ("left", "right"):
            return phrase("PP", word("IN", "on"), phrase("NP", word("DT", "the"), word("NN", pos)))
        if pos in ("top", "bottom"):
            return phrase("PP", word("IN", "at"), phrase("NP", word("DT", "the"), word("NN", pos)))
        noun = self.ch.pick("pos.centre", ("middle", "center"))
        return phrase("PP", word("IN", "in"), phrase("NP", word("DT", "the"), word("NN", noun)))

    # ----- whole captions ---------------------------------------------------------------------
    def _copula(self, plural: bool) -> Node:
        return word("VBP", "are") if plural else word("VBZ", "is")

    def _there(self, np: Node, plural: bool) -> Node:
        return phrase("S", phrase("NP", word("EX", "there")), phrase("VP", self._copula(plural), np))

    def _coordinate(self, nps: list[Node]) -> Node:
        if len(nps) == 2:
            return phrase("NP", nps[0], word("CC", "and"), nps[1])
        return phrase("NP", nps[0], word(",", ","), nps[1], word("CC", "and"), nps[2])

    def _wrap_np(self, np: Node) -> Node:
        """Optional caption-style wrappers around a top-level NP: background, "a picture of"."""
        ch = self.ch
        if self.facts.background and ch.optional("background", 0.12):
            bg = phrase("NP", word("DT", "a"),
                        word("JJ", ch.pick("background.word", BACKGROUND_WORDS[self.facts.background])),
                        word("NN", "background"))
            np = phrase("NP", np, phrase("PP", word("IN", "on"), bg))
            self.meaning.background = self.facts.background
        if ch.optional("picture", 0.15):
            noun = ch.pick("picture.noun", ("picture", "image", "drawing", "photo"))
            head = phrase("NP", word("DT", _article(noun)), word("NN", noun))
            np = phrase("NP", head, phrase("PP", word("IN", "of"), np))
        return np

    def describe(self) -> Node:
        n = len(self.facts.groups)
        if n == 1:
            return self._one()
        if n == 2:
            return self._two()
        return self._three()

    def _plural(self, mention: int) -> bool:
        return self.plural[mention]

    def _one(self) -> Node:
        ch = self.ch
        positions = self.facts.positions.get(0, [])
        forms = ["np", "there", "np_pos", "s_pos"]
        weights = [0.4, 0.25, 0.2 if positions else 0.0, 0.15 if positions else 0.0]
        form = ch.pick("form", forms, weights)
        definite = form == "s_pos"
        np, m = self.group_np(0, definite=definite)
        if form == "there":
            return self._there(np, self._plural(m))
        if form in ("np_pos", "s_pos"):
            pos = ch.pick("pos", positions)
            self.meaning.positions.append((pos, m))
            if form == "s_pos":
                return phrase("S", np, phrase("VP", self._copula(self._plural(m)), self.position_pp(pos)))
            return self._wrap_np(phrase("NP", np, self.position_pp(pos)))
        return self._wrap_np(np)

    def _two(self) -> Node:
        ch = self.ch
        a, b = ch.pick("order", [(0, 1), (1, 0)])
        rels = self.facts.relations.get((a, b), [])
        forms = ["np_rel", "s_rel", "there_rel", "sinv", "coord", "there_coord", "coord_next", "s_coord_next"]
        has_next = "next" in rels
        weights = [0.22 if rels else 0, 0.24 if rels else 0, 0.08 if rels else 0, 0.1 if rels else 0,
                   0.08, 0.06, 0.12 if has_next else 0, 0.1 if has_next else 0]
        form = ch.pick("form", forms, weights)
        definite = form in ("s_rel", "sinv", "s_coord_next")
        if form in ("np_rel", "s_rel", "there_rel", "sinv"):
            rel = ch.pick("rel", rels)
            subj, ms = self.group_np(a, definite=definite)
            obj, mo = self.group_np(b, definite=definite)
            pp = self.relate("rel", rel, ms, mo, obj)
            if form == "np_rel":
                return self._wrap_np(phrase("NP", subj, pp))
            if form == "s_rel":
                return phrase("S", subj, phrase("VP", self._copula(self._plural(ms)), pp))
            if form == "there_rel":
                return self._there(phrase("NP", subj, pp), self._plural(ms))
            return phrase("SINV", pp, phrase("VP", self._copula(self._plural(ms))), subj)
        first, m1 = self.group_np(a, definite=definite, allow_part=False)
        second, m2 = self.group_np(b, definite=definite)
        both = self._coordinate([first, second])
        if form == "coord":
            return self._wrap_np(both)
        if form == "there_coord":
            return self._there(both, self._plural(m1))
        self.meaning.relations.append(("next", m1, m2))
        each_other = phrase("PP", word("TO", "to"), phrase("NP", word("DT", "each"), word("JJ", "other")))
        adjacent = phrase("ADVP", word("JJ", "next"), each_other)
        if form == "coord_next":
            return self._wrap_np(phrase("NP", both, adjacent))
        return phrase("S", both, phrase("VP", word("VBP", "are"), adjacent))

    def _three(self) -> Node:
        ch = self.ch
        rel = self.facts.relations
        candidates: list[tuple[str, tuple[int, int, int], float]] = []
        orders = _ORDERS3
        shared = {pair: set(rels) for pair, rels in rel.items()}
        chain = [(a, b, c) for a, b, c in orders if rel[(a, b)] and rel[(b, c)]]
        valid_orders = {  # the orders each form can be said in
            "chain": chain,
            "s_chain": chain,
            "coord3": orders,
            "there_coord3": orders,
            "two_rel": [(a, b, c) for a, b, c in orders if not shared[(a, c)].isdisjoint(shared[(b, c)])],
            "np_rel_coord": [(a, b, c) for a, b, c in orders if not shared[(a, b)].isdisjoint(shared[(a, c)])],
        }
        for form, w in _FORM_WEIGHTS3.items():
            valid = valid_orders[form]
            candidates += [(form, order, w / len(valid)) for order in valid]
        form, (a, b, c), _ = ch.pick("form", candidates, [w for *_, w in candidates])
        definite = form in ("s_chain", "two_rel")
        if form in ("chain", "s_chain"):
            subj, ma = self.group_np(a, definite=definite)
            mid, mb = self.group_np(b)
            last, mc = self.group_np(c)
            inner = phrase("NP", mid, self.relate("rel2", ch.pick("rel2", rel[(b, c)]), mb, mc, last))
            pp = self.relate("rel1", ch.pick("rel1", rel[(a, b)]), ma, mb, inner)
            if form == "chain":
                return self._wrap_np(phrase("NP", subj, pp))
            return phrase("S", subj, phrase("VP", self._copula(self._plural(ma)), pp))
        if form in ("coord3", "there_coord3"):
            mentions = [self.group_np(k, allow_part=k == c) for k in (a, b, c)]
            both = self._coordinate([np for np, _ in mentions])
            if form == "coord3":
                return self._wrap_np(both)
            return self._there(both, self._plural(mentions[0][1]))
        if form == "two_rel":
            shared = sorted(set(rel[(a, c)]) & set(rel[(b, c)]))
            r = ch.pick("rel1", shared)
            first, m1 = self.group_np(a, definite=True, allow_part=False)
            second, m2 = self.group_np(b, definite=True)
            obj, mc = self.group_np(c, definite=True)
            self.meaning.relations.append((r, m1, mc))
            pp = self.relate("rel1", r, m2, mc, obj)
            return phrase("S", self._coordinate([first, second]), phrase("VP", word("VBP", "are"), pp))
        shared = sorted(set(rel[(a, b)]) & set(rel[(a, c)]))
        r = ch.pick("rel1", shared)
        subj, ma = self.group_np(a)
        first, m1 = self.group_np(b, allow_part=False)
        second, m2 = self.group_np(c)
        self.meaning.relations.append((r, ma, m2))
        pp = self.relate("rel1", r, ma, m1, self._coordinate([first, second]))
        return self._wrap_np(phrase("NP", subj, pp))


_ORDERS3 = list(permutations(range(3)))
_FORM_WEIGHTS3 = {"chain": 0.22, "s_chain": 0.15, "coord3": 0.12, "there_coord3": 0.08, "two_rel": 0.28,
                  "np_rel_coord": 0.15}


def describe(facts: Facts, seed: int, min_words: int = 3, max_words: int = 20, attempts: int = 12,
             with_tree: bool = True) -> Caption:
    """A caption of ``facts`` with its tree, phrase-to-mask alignment and meaning.

    Decisions depend only on ``seed`` (and the facts). Captions outside ``[min_words, max_words]``
    are redrawn with fewer optional modifiers; the last attempt has none. ``with_tree=False``
    leaves ``tree`` and ``phrases`` empty (cheaper, for negatives).
    """
    best: Caption | None = None
    for attempt in range(attempts):
        verbosity = 1.0 if attempt < attempts // 2 else max(0.0, 1.0 - (attempt - attempts // 2 + 1) / 3)
        if attempt == attempts - 1:
            verbosity = 0.0
        d = _Describer(facts, Choices(seed, verbosity, salt=attempt))
        tree = d.describe()
        tokens = _leaves(tree)
        if min_words <= len(tokens) <= max_words:
            return _caption(tree, tokens, d.meaning, with_tree)
        caption = _caption(tree, tokens, d.meaning, with_tree)
        if best is None or abs(len(tokens) - max_words) < abs(len(best.tokens) - max_words):
            best = caption
    assert best is not None
    return best


def _caption(tree: Node, tokens: list[str], meaning: Meaning, with_tree: bool) -> Caption:
    if with_tree:
        return Caption(tokens, *_linearise(tree), meaning)
    return Caption(tokens, "", [], meaning)
