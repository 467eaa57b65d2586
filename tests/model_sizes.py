"""Model sizes shared by tests: overrides of ``hiclip-tiny`` small enough for a fast CPU test."""
from __future__ import annotations

# Two layers per tower, width 32, a 4 x 4 patch grid: every code path, milliseconds per step.
TWO_LAYER = {
    "embed_dim": 16,
    "text": {"width": 32, "layers": 2, "heads": 2, "context_length": 16},
    "vision": {"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "heads": 2},
}
