"""Per-layer link thresholds: the one helper text trees, image groups and the link pictures use.

Links live in (0, 1] and saturate with depth (method.md 5), so a threshold is either absolute
(the same value, or one value per layer) or a per-layer quantile of the links at hand (a corpus,
a sentence, one image's grid).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hiclip.errors import HiCLIPError

#: The threshold of a layer with no links at all (one-word sentences, a one-patch grid): the top
#: of the link range. Nothing is there to join or split, and the value stays finite for JSON.
NO_LINKS = 1.0


def layer_thresholds(links: np.ndarray, value: float | Sequence[float], quantile: bool = False) -> np.ndarray:
    """One threshold per layer.

    Parameters
    ----------
    links : ndarray of float, shape (L, E)
        Each layer's links, flattened and pooled (E may be 0).
    value : float or sequence of L floats
        An absolute threshold (for every layer, or one per layer), or with ``quantile`` a
        quantile in [0, 1] taken of each layer's E links (numpy ``quantile``, linear).
    quantile : bool

    Returns
    -------
    ndarray of float64, shape (L,)
        With ``quantile`` and no links (E = 0), :data:`NO_LINKS` at every layer.
    """
    links = np.asarray(links, dtype=np.float64)
    if links.ndim != 2:
        raise HiCLIPError(f"links must be (layers, links) to take per-layer thresholds; got shape {links.shape}")
    n_layers = links.shape[0]
    if not quantile:
        try:
            return np.broadcast_to(np.asarray(value, dtype=np.float64), (n_layers,)).copy()
        except ValueError:
            raise HiCLIPError(f"need one threshold or one per layer ({n_layers}); got {value!r}") from None
    q = float(value)
    if not 0.0 <= q <= 1.0:
        raise HiCLIPError(f"a quantile threshold must lie in [0, 1]; got {value}")
    if links.shape[1] == 0:
        return np.full(n_layers, NO_LINKS)
    return np.quantile(links, q, axis=1)
