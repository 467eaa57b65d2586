"""Pictures of induced hierarchies.

* ``viz.trees``   -- constituency trees (SVG via svgling, PNG/PDF via matplotlib), predicted vs gold
* ``viz.links``   -- per-layer link scores: bars under the words, heatmaps on the patch grid
* ``viz.images``  -- group overlays per layer, the segment tree diagram
* ``viz.save``    -- ``save_figure(picture, path)``: PNG, SVG or PDF by extension

Modules are imported on demand (``from viz import trees``) so importing ``viz`` stays cheap.
Installed beside ``hiclip`` by the ``hiclip-toolkit`` distribution; ``DISTRIBUTION`` lets the
``hiclip`` command tell this package from PyPI's unrelated ``viz`` (README, "Installing").
"""

DISTRIBUTION = "hiclip-toolkit"
