"""Exact nearest-neighbour search over embeddings, in numpy.

``search(queries, corpus, k)`` scores every query against every corpus
vector (cosine similarity: the vectors are L2-normalised first) and keeps
the ``k`` best per query, a block of queries at a time so that memory stays
at ``block x corpus`` scores. It is exact and fast enough for corpora up to
about a million vectors on a CPU (one matrix product per block); beyond
that, hand the vectors to a vector index (see ``docs/embeddings.md``).

Ties are broken by corpus order (the earlier item first), so results are
deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, DataError, format_error

__all__ = ["as_vectors", "cosine_similarity", "normalize", "search"]


def as_vectors(values: Any, name: str, dim: int | None = None) -> np.ndarray:
    """Checks ``values`` as a finite ``(N, D)`` float matrix and returns it as float32.

    Raises:
        DataError: not 2-D, empty, not finite, or ``D != dim``.

    Examples:
        >>> as_vectors([[1, 0], [0, 1]], "corpus").dtype.name
        'float32'
    """
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a matrix of embedding vectors",
                expected="a float array of shape (N, D)",
                received={name: values},
                fix="Pass the output of result.embed(items)",
            )
        ) from exc
    if arr.ndim != 2 or len(arr) == 0 or (dim is not None and arr.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise DataError(
            format_error(
                f"{name} has shape {arr.shape}",
                expected=f"a non-empty float array of shape {want}",
                received={name: arr.shape},
                fix="Embed the items with the same model (result.embed) first",
            )
        )
    if not np.isfinite(arr).all():
        raise DataError(
            format_error(
                f"{name} holds NaN or inf",
                expected="finite vectors",
                received={name: arr.shape},
            )
        )
    return arr


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero).

    Examples:
        >>> normalize(np.array([[3.0, 4.0]])).tolist()
        [[0.6, 0.8]]
    """
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The ``(len(a), len(b))`` matrix of cosine similarities.

    Examples:
        >>> cosine_similarity(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 2.0]])).round(4)
        array([[0.7071, 0.    ]], dtype=float32)
    """
    a = normalize(np.asarray(a, np.float32))
    b = normalize(np.asarray(b, np.float32))
    return np.asarray(a @ b.T, np.float32)


def search(
    queries: np.ndarray, corpus: np.ndarray, k: int = 10, *, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar corpus vectors of each query: ``(indices, scores)``.

    Args:
        queries: ``(Q, D)`` vectors.
        corpus: ``(C, D)`` vectors.
        k: results per query (at most ``C``).
        block: queries scored at a time.

    Returns:
        ``indices`` int64 ``(Q, min(k, C))`` into ``corpus``, best first, and
        their cosine ``scores`` (float32, same shape).

    Examples:
        >>> corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> idx, scores = search(np.array([[1.0, 0.1]]), corpus, k=2)
        >>> idx.tolist(), [round(float(v), 3) for v in scores[0]]
        ([[0, 2]], [0.995, 0.774])
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ArgumentTypeError(
            format_error(
                "k must be a positive int",
                expected="an int >= 1, e.g. k=10",
                received={"k": k},
            )
        )
    q = normalize(as_vectors(queries, "queries"))
    c = normalize(as_vectors(corpus, "corpus", dim=q.shape[1]))
    k = min(int(k), len(c))
    indices = np.empty((len(q), k), np.int64)
    scores = np.empty((len(q), k), np.float32)
    for start in range(0, len(q), block):
        s = q[start : start + block] @ c.T
        if k < len(c):
            order = _top_k(s, k)
        else:
            order = np.argsort(-s, axis=1, kind="stable")
        indices[start : start + block] = order
        scores[start : start + block] = np.take_along_axis(s, order, axis=1)
    return indices, scores


def _top_k(s: np.ndarray, k: int) -> np.ndarray:
    """The column indices of the ``k`` largest scores of each row, best first (ties: lower index)."""
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(s, part, axis=1).min(axis=1, keepdims=True)
    above = (s > kth).sum(axis=1)
    tied = (s == kth).sum(axis=1)
    for row in np.flatnonzero(above + tied > k):  # argpartition cut a tie: take the first ones
        over = np.flatnonzero(s[row] > kth[row])
        equal = np.flatnonzero(s[row] == kth[row])[: k - len(over)]
        part[row] = np.r_[over, equal]
    vals = np.take_along_axis(s, part, axis=1)
    return np.take_along_axis(part, np.lexsort((part, -vals), axis=1), axis=1)
