"""Noisy linear imputation of removed pixels (ROAD), with the sparse system assembled in one go.

ROAD (Rong et al. 2022, "A consistent and efficient evaluation strategy for attribution methods")
replaces removed pixels by the solution of a sparse linear system: each removed pixel equals the
weighted mean of its eight neighbours (weight 1/6 for the four direct ones, 1/12 for the diagonals),
known neighbours moving to the right-hand side, and noise is added to the solution. Quantus and
pytorch-grad-cam both assemble that system entry by entry in a ``scipy.sparse.lil_matrix``, which
takes about as long as solving it. :func:`imputation_system` builds the same matrix from coordinate
arrays: identical entries, identical variable order, identical right-hand side arithmetic, so
``scipy.sparse.linalg.spsolve`` returns the same solution bit for bit and the toolkits' noise draws
can follow unchanged.

>>> import numpy as np
>>> image = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
>>> a, b = imputation_system((3, 3), np.array([4]), image.reshape(1, -1), ROAD_WEIGHTS)
>>> a.toarray(), b.round(5)  # the centre pixel: −1 · x = −(mean of its neighbours)
(array([[-1.]]), array([[-4.]]))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix, csc_matrix
from scipy.sparse.linalg import spsolve

__all__ = ["ROAD_WEIGHTS", "imputation_system", "solve_imputation"]

#: ROAD's neighbour weights, in the order both toolkits walk them (the order fixes the rounding of ``b``).
ROAD_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)


def imputation_system(
    shape: tuple[int, int],
    missing: np.ndarray,
    image: np.ndarray,
    weights: Sequence[tuple[tuple[int, int], float]] = ROAD_WEIGHTS,
) -> tuple[csc_matrix, np.ndarray]:
    """The system ``A·v = b`` whose solution ``v`` (one column per channel) fills the ``missing`` pixels.

    Args:
        shape: ``(H, W)`` of the image.
        missing: flat pixel indices to impute, in the order of the unknowns (Quantus keeps the order it is
            given; grad-cam passes them sorted).
        image: ``C×(H·W)`` values; the known neighbours' values go to ``b``.
        weights: ``((row offset, column offset), weight)`` per neighbour.

    Returns:
        ``A`` (``n×n``, CSC) and ``b`` (``n×C``, float64), equal to the toolkits' ``lil_matrix`` assembly.
    """
    h, w = shape
    missing = np.asarray(missing).reshape(-1)
    n = missing.size
    known = np.ones(h * w)
    known[missing] = 0
    variable = np.zeros(h * w, dtype=int)
    variable[missing] = np.arange(n)
    b = np.zeros((n, image.shape[0]))
    diagonal = np.ones(n)
    rows, cols, vals = [], [], []
    row_of, col_of = missing // w, missing % w
    for (dr, dc), weight in weights:
        r, c = row_of + dr, col_of + dc
        valid = ~((r < 0) | (c < 0) | (r >= h) | (c >= w))
        neighbours = (missing + dr * w + dc)[valid]
        ids = np.flatnonzero(valid)
        has_value = known[neighbours] == 1
        b[ids[has_value], :] -= weight * image[:, neighbours[has_value]].T
        rows.append(ids[~has_value])
        cols.append(variable[neighbours[~has_value]])
        vals.append(np.full(int((~has_value).sum()), weight))
        diagonal[~valid] -= weight
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(-diagonal)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return csc_matrix(a), b


def solve_imputation(
    shape: tuple[int, int],
    missing: np.ndarray,
    image: np.ndarray,
    weights: Sequence[tuple[tuple[int, int], float]] = ROAD_WEIGHTS,
) -> np.ndarray:
    """The values of the ``missing`` pixels without noise: ``spsolve`` of :func:`imputation_system`, as both
    toolkits call it (``n×C``; SciPy returns ``(n,)`` for one channel)."""
    a, b = imputation_system(shape, missing, image, weights)
    return np.asarray(spsolve(a, b))
