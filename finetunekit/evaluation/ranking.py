"""Ranking and verification metrics for embeddings (pure numpy).

* :func:`ranking_metrics`: recall@k, MRR and nDCG@k of a query x corpus
  score matrix with binary relevance;
* :func:`verification_metrics`: ROC AUC of same / different pairs and the
  threshold with the best balanced accuracy;
* :func:`spearman` and :func:`pearson`: correlations of scores with targets.

Ties in a ranking are broken by corpus order (the earlier item ranks first),
so results are deterministic.
"""

from __future__ import annotations

import numpy as np

from finetunekit.evaluation.metrics import _average_ranks, roc_auc

__all__ = ["pearson", "ranking_metrics", "spearman", "verification_metrics"]

_CHUNK = 256  # queries ranked at a time: bounds the (chunk, corpus) sort in memory


def ranking_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    *,
    exclude: np.ndarray | None = None,
    ks: tuple[int, ...] = (1, 5, 10),
    ndcg_k: int = 10,
) -> dict[str, float]:
    """Recall@k, MRR and nDCG@``ndcg_k`` of the queries that have a relevant item.

    For each query the corpus is sorted by descending score (ties: corpus
    order); excluded items (a query's own item) are left out of its ranking.

    * ``recall_at_k``: the share of queries with a relevant item in their top
      k (the hit rate, as "Recall@K" of metric learning; with one relevant
      item per query it is the usual recall);
    * ``mrr``: ``1 / rank`` of the first relevant item (over the whole ranking);
    * ``ndcg_at_k``: binary-gain DCG of the top k (discount ``1 / log2(rank + 1)``)
      over the best possible DCG;

    each averaged over the queries with at least one relevant item.
    ``num_queries`` counts those, ``queries_without_relevant`` the others.

    Args:
        scores: ``(Q, C)`` similarities.
        relevant: ``(Q, C)`` booleans.
        exclude: ``(Q, C)`` booleans: items left out of a query's ranking.
        ks: the cut-offs of recall.
        ndcg_k: the cut-off of nDCG.

    Examples:
        >>> import numpy as np
        >>> s = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])
        >>> rel = np.array([[False, True, False], [False, False, True]])
        >>> m = ranking_metrics(s, rel, ks=(1, 2))
        >>> m["recall_at_1"], m["recall_at_2"], m["mrr"]
        (0.5, 1.0, 0.75)
    """
    scores = np.asarray(scores, np.float64)
    relevant = np.asarray(relevant, bool)
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        relevant = relevant & ~exclude
    n_rel = relevant.sum(axis=1)
    queries = np.flatnonzero(n_rel > 0)
    width = scores.shape[1]
    recalls = {k: np.zeros(len(queries)) for k in ks}
    rr = np.zeros(len(queries))
    ndcg = np.zeros(len(queries))
    discount = 1.0 / np.log2(np.arange(2, width + 2))
    for start in range(0, len(queries), _CHUNK):
        rows = queries[start : start + _CHUNK]
        s = scores[rows].copy()
        if exclude is not None:
            s[exclude[rows]] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")
        hits = np.take_along_axis(relevant[rows], order, axis=1)
        if exclude is not None:  # excluded items rank last and never count
            hits &= ~np.take_along_axis(exclude[rows], order, axis=1)
        part = slice(start, start + len(rows))
        for k in ks:
            recalls[k][part] = hits[:, :k].any(axis=1)
        rr[part] = 1.0 / (hits.argmax(axis=1) + 1.0)
        cut = min(ndcg_k, width)
        dcg = (hits[:, :cut] * discount[:cut]).sum(axis=1)
        ideal = np.cumsum(discount[:cut])[np.minimum(n_rel[rows], cut) - 1]
        ndcg[part] = dcg / ideal
    out: dict[str, float] = {}
    empty = len(queries) == 0
    for k in ks:
        out[f"recall_at_{k}"] = float("nan") if empty else float(recalls[k].mean())
    out["mrr"] = float("nan") if empty else float(rr.mean())
    out[f"ndcg_at_{ndcg_k}"] = float("nan") if empty else float(ndcg.mean())
    out["num_queries"] = len(queries)
    out["queries_without_relevant"] = int(len(n_rel) - len(queries))
    return out


def verification_metrics(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """ROC AUC of same (``positive``) against different (``negative``) pair scores.

    ``best_threshold`` is the score cut with the best balanced accuracy
    (the mean of the true-positive and true-negative rates) when a pair is
    called "same" for ``score >= threshold``; it lies halfway between two
    observed scores. ``balanced_accuracy`` is the value there.

    Examples:
        >>> m = verification_metrics(np.array([0.9, 0.8, 0.4]), np.array([0.5, 0.1]))
        >>> m["roc_auc"], m["best_threshold"], m["balanced_accuracy"]
        (0.8333333333333334, 0.65, 0.8333333333333333)
    """
    pos = np.asarray(positive, np.float64).reshape(-1)
    neg = np.asarray(negative, np.float64).reshape(-1)
    if len(pos) == 0 or len(neg) == 0:
        return {
            "roc_auc": float("nan"),
            "best_threshold": float("nan"),
            "balanced_accuracy": float("nan"),
        }
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    scores = np.r_[pos, neg]
    auc = roc_auc(labels, scores)
    cuts = np.unique(scores)[::-1]  # descending: call "same" for score >= cut
    tp = np.searchsorted(np.sort(-pos), -cuts, side="right")
    fp = np.searchsorted(np.sort(-neg), -cuts, side="right")
    balanced = (tp / len(pos) + 1.0 - fp / len(neg)) / 2.0
    best = int(np.argmax(balanced))
    lower = cuts[best + 1] if best + 1 < len(cuts) else cuts[best] - 1.0
    return {
        "roc_auc": float("nan") if auc is None else float(auc),
        "best_threshold": float((cuts[best] + lower) / 2.0),
        "balanced_accuracy": float(balanced[best]),
    }


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (NaN when either side is constant).

    Examples:
        >>> pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))
        0.9933992677987828
    """
    a = np.asarray(a, np.float64).reshape(-1) - np.mean(a)
    b = np.asarray(b, np.float64).reshape(-1) - np.mean(b)
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float("nan") if norm == 0 else float((a * b).sum() / norm)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of the average ranks (ties share a rank).

    Examples:
        >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))
        1.0
    """
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return pearson(_average_ranks(a), _average_ranks(b))
