"""Affinities -> hierarchies (constituency trees, segment hierarchies) and their scores.

Installed beside ``hiclip`` by the ``hiclip-toolkit`` distribution; ``DISTRIBUTION`` lets the
``hiclip`` command tell this package from PyPI's unrelated ``induction`` (README, "Installing").
"""

DISTRIBUTION = "hiclip-toolkit"
