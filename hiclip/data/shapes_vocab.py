"""The closed world of the synthetic shapes dataset: colours, shapes, textures and their words.

Every attribute the renderer can draw has the words the grammar may use for it, so a caption
can only say what is true of the image.
"""
from __future__ import annotations

# Saturated object colours (RGB 0..255). Neighbouring names are kept far apart in RGB so a
# caption's colour word is unambiguous under the renderer's small colour jitter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 35),
    "purple": (135, 50, 175),
    "orange": (245, 135, 20),
    "pink": (245, 125, 190),
    "brown": (125, 75, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "grey": (130, 130, 130),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "grey": ("grey", "gray"),
    "purple": ("purple", "violet"),
}
# Colours that may be drawn in a light or dark tone and described as "light blue" / "dark green".
TONED_COLOURS = ("blue", "green")
TONES = ("light", "dark")

SHAPES = ("square", "circle", "triangle", "diamond", "star", "cross", "hexagon")
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    # (singular, plural)
    "square": (("square", "squares"), ("box", "boxes")),
    "circle": (("circle", "circles"), ("disk", "disks")),
    "triangle": (("triangle", "triangles"),),
    "diamond": (("diamond", "diamonds"),),
    "star": (("star", "stars"),),
    "cross": (("cross", "crosses"), ("plus", "pluses")),
    "hexagon": (("hexagon", "hexagons"),),
}
# Shapes an inner part may take (compact enough to sit inside any object).
INNER_SHAPES = ("circle", "square", "diamond")

TEXTURES = ("solid", "striped", "dotted", "checkered", "speckled")
TEXTURE_WEIGHTS = (0.4, 0.15, 0.15, 0.15, 0.15)
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("plain", "solid"),
    "striped": ("striped",),
    "dotted": ("dotted", "spotted"),
    "checkered": ("checkered", "checked"),
    "speckled": ("speckled", "noisy"),
}

BACKGROUNDS = ("noisy", "blotchy", "striped", "checkered", "gradient")
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "noisy": ("noisy", "grainy"),
    "blotchy": ("blotchy", "mottled"),
    "striped": ("striped",),
    "checkered": ("checkered",),
    "gradient": ("shaded",),
}

SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}

PART_KINDS = ("inner", "band", "border")
PART_WORDS: dict[str, tuple[str, ...]] = {
    "band": ("band", "stripe"),
    "border": ("border", "outline", "rim", "edge"),
}

RELATIONS = ("left", "right", "above", "below", "next")
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above", "next": "next"}
POSITIONS = ("left", "right", "top", "bottom", "middle")

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
