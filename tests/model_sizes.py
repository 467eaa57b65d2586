"""Model sizes shared by tests: overrides of ``hiclip-tiny`` small enough for a fast CPU test."""
from __future__ import annotations

# Two layers per tower, width 32, a 4 x 4 patch grid: every code path, milliseconds per step.
TWO_LAYER = {
    "embed_dim": 16,
    "text": {"width": 32, "layers": 2, "heads": 2, "context_length": 16},
    "vision": {"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "heads": 2},
}

# The training tests' model: 32 x 32 synthetic shapes images, 4 x 4 patches of 8 px.
SHAPES_32 = {
    "embed_dim": 32,
    "text": {"layers": 2, "width": 32, "heads": 2, "context_length": 24},
    "vision": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
}
