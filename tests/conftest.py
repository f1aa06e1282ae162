"""Shared test settings: quiet TensorFlow, tiny fixtures."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="ftk-keras-home-"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_TESTS_SINCE_GC = [0]


@pytest.fixture(autouse=True)
def _clear_keras_session():
    yield
    # Python's full garbage collection takes ~0.5 s with TensorFlow loaded: run it
    # every 20 tests instead of after each one (the Keras state is reset every time).
    _TESTS_SINCE_GC[0] += 1
    full = _TESTS_SINCE_GC[0] % 20 == 0
    keras.backend.clear_session(free_memory=full)


@pytest.fixture
def tiny_images():
    """40 random 16x16 grayscale uint8 images with 2 balanced classes learnable from brightness."""
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = rng.integers(0, 100, (40, 16, 16)).astype("uint8")
    x[y == 1] += 120
    return x, y


def save_tiny_bert_preset(folder: str, vocab: list[str], *, sequence_length: int, num_layers: int):
    """Saves a random hidden-16 BERT (2 heads) and its WordPiece preprocessor as a local preset."""
    import keras_hub

    keras.utils.set_random_seed(0)  # the same random encoder in every run
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab)
    keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    ).save_to_preset(folder)
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab),
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=sequence_length,
    ).save_to_preset(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert():
    """``save_tiny_bert_preset``, for tests that need a small random KerasHub text encoder."""
    return save_tiny_bert_preset
