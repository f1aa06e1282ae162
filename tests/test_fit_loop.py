"""finetunekit's head loop (fit_loop.fit_head) against Keras' own fit, event by event."""

from __future__ import annotations

import re
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from _events import Recorder

from finetunekit.training import fit_loop

STEPS = 5  # batches per epoch: 40 examples, batch 8


def _data() -> tuple[tf.data.Dataset, tf.data.Dataset]:
    keras.utils.set_random_seed(0)  # the shuffle's seed is (global seed, 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(52, 6)).astype("float32")
    y = np.argmax(x[:, :3], axis=1).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).shuffle(40, seed=1).batch(8)
    val = tf.data.Dataset.from_tensor_slices((x[40:], y[40:])).batch(8)  # 2 batches, one short
    return train, val


def _model(jit_compile: bool = False) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dropout(0.3),  # random draws: both loops must make the same ones
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=STEPS,  # fit then sends one batch event per epoch, as fit_head
    )
    return model


def _both_ways(
    epochs: int = 4,
    initial_epoch: int = 1,
    extra: Any = None,
    jit_compile: bool = False,
    traced: list[fit_loop.HeadSteps] | None = None,
    **kwargs: Any,
) -> dict[str, tuple[keras.Model, keras.callbacks.History, list[str]]]:
    """Keras fit and fit_head on the same model, data and seed: (model, history, events).

    With a ``traced`` list, fit_head runs functions traced beforehand by ``trace_head`` on
    datasets of zeros shaped like the data (as the feature cache does), appended to it."""
    runs = {}
    for way in ("keras", "finetunekit"):
        train, val = _data()  # fresh: each new iterator of a shuffling dataset reshuffles
        model = _model(jit_compile)
        recorder = Recorder()
        callbacks = [recorder, *(extra() if extra else [])]
        repeated = train.repeat(epochs - initial_epoch)  # one iterator reads every epoch
        if way == "keras":
            history = model.fit(
                repeated,
                steps_per_epoch=STEPS,
                validation_data=val,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=0,
                **kwargs,
            )
        else:
            if traced is not None:
                zeros = _zeros_like(train), _zeros_like(val)
                traced.append(
                    fit_loop.trace_head(
                        model,
                        zeros[0],
                        STEPS,
                        validation=zeros[1],
                        class_weight=kwargs.get("class_weight"),
                    )
                )
                kwargs["traced"] = traced[-1]
            history = fit_loop.fit_head(
                model,
                repeated,
                STEPS,
                validation=val,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=0,
                **kwargs,
            )
        runs[way] = (model, history, recorder.events)
    return runs


def _zeros_like(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda x, y: (tf.zeros_like(x), y))


def _assert_same(runs: dict[str, tuple[keras.Model, keras.callbacks.History, list[str]]]) -> None:
    (ref, ref_history, ref_events), (net, history, events) = runs["keras"], runs["finetunekit"]
    assert history.epoch == ref_history.epoch
    assert history.history.keys() == ref_history.history.keys()
    for key, values in ref_history.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, err_msg=key)
    for a, b in zip(net.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert events == ref_events  # the same callback calls, in order, with the same log keys


def test_fit_head_trains_as_keras_fit_does() -> None:
    runs = _both_ways()
    _assert_same(runs)
    history = runs["finetunekit"][1]
    assert history.epoch == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]  # it learns


def test_fit_head_applies_class_weight_as_keras_fit_does() -> None:
    runs = _both_ways(class_weight={0: 1.0, 1: 4.0, 2: 0.5})
    _assert_same(runs)
    plain = _both_ways()["finetunekit"][1]
    assert plain.history["loss"] != runs["finetunekit"][1].history["loss"]  # weights mattered


def test_fit_head_stops_early_as_keras_fit_does() -> None:
    def stopper() -> list[keras.callbacks.Callback]:
        return [keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=1)]

    runs = _both_ways(epochs=6, initial_epoch=0, extra=stopper)
    _assert_same(runs)
    assert runs["finetunekit"][1].epoch == [0, 1]  # no 10-point improvement: stops after 2


def test_fit_head_with_xla_matches_keras_fit_with_xla() -> None:
    _assert_same(_both_ways(epochs=2, initial_epoch=0, jit_compile=True))


def test_fit_head_prints_the_progress_bar_fit_prints(capsys: pytest.CaptureFixture[str]) -> None:
    train, val = _data()
    model = _model()
    fit_loop.fit_head(model, train.repeat(2), STEPS, validation=val, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert re.findall(r"Epoch \d/2", out) == ["Epoch 1/2", "Epoch 2/2"]
    assert out.count("val_accuracy") == 2


def test_fit_head_needs_a_known_number_of_validation_batches() -> None:
    train, val = _data()
    unknown = val.filter(lambda x, y: True)  # cardinality unknown
    with pytest.raises(ValueError, match="known number of batches"):
        fit_loop.fit_head(_model(), train, STEPS, validation=unknown, epochs=1, verbose=0)


# ------------------------------------------------------------- build_before_fit


@pytest.fixture
def traces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the models whose training step is traced, one entry per trace."""
    seen: list[str] = []
    real = keras.Model.train_step

    def counting(self: keras.Model, data: Any) -> Any:
        seen.append(self.name)  # runs once per trace, not per step
        return real(self, data)

    monkeypatch.setattr(keras.Model, "train_step", counting)
    return seen


def _fit(build: bool, traces: list[str]) -> tuple[bool, int, dict[str, Any], list[np.ndarray]]:
    train, val = _data()
    model = _model()
    model.compile(  # one step per call, the default of the full-model phases
        optimizer=keras.optimizers.Adam(0.05),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    traces.clear()
    built = fit_loop.build_before_fit(model, train) if build else False
    history = model.fit(train, validation_data=val, epochs=3, verbose=0).history
    return built, len(traces), history, model.get_weights()


def test_build_before_fit_saves_fits_second_trace_and_changes_nothing(traces: list[str]) -> None:
    """Keras' fit alone traces its step twice (its first trace creates the optimizer's
    variables); after build_before_fit once, with the same history and weights."""
    plain = _fit(False, traces)
    built = _fit(True, traces)
    assert plain[:2] == (False, 2)
    assert built[:2] == (True, 1)
    assert built[2] == plain[2]
    for got, want in zip(built[3], plain[3], strict=True):
        np.testing.assert_array_equal(got, want)


def test_build_before_fit_leaves_what_it_cannot_build_to_fit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model()
    train, _ = _data()
    assert fit_loop.build_before_fit(model, np.zeros((4, 6))) is False  # not a tf.data.Dataset

    def cannot(*args: Any) -> None:
        raise RuntimeError("no symbolic call")

    monkeypatch.setattr(fit_loop, "symbolic_build", cannot)
    with caplog.at_level("INFO", logger="finetunekit"):
        assert fit_loop.build_before_fit(model, train) is False
    assert "built by fit's first trace (no symbolic call)" in caplog.text
    assert not model.optimizer.built
    model.fit(train, epochs=1, verbose=0)  # fit builds it, as without finetunekit
    assert model.optimizer.built


def test_pipeline_phases_trace_each_step_once(traces: list[str], tiny_images: Any) -> None:
    import finetunekit as ftk

    x, y = tiny_images
    backbone = ftk.Backbone.from_model(
        keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                keras.layers.Conv2D(4, 3),
                keras.layers.GlobalAveragePooling2D(),
            ]
        ),
        preprocessing="0-1",
    )
    trainer = ftk.Trainer(epochs=2, fine_tune_epochs=2, batch_size=8, verbose=0, seed=0)
    tuner = ftk.FineTuner().with_data(ftk.DatasetAdapter.from_arrays(x, y))
    result = tuner.with_backbone(backbone).with_trainer(trainer).fit()
    assert result.info["feature_cache"]["head_loop"] == "finetunekit"
    assert len(traces) == 2, traces  # the head's step in phase 1, the full model's in phase 2


@pytest.mark.parametrize("class_weight", [None, {0: 1.0, 1: 4.0, 2: 0.5}])
def test_fit_head_on_functions_traced_before_the_data_trains_as_keras_fit(class_weight) -> None:
    """trace_head on datasets of zeros shaped like the data (what the feature cache traces
    while the backbone runs): fit_head then trains as Keras' fit does, with those traces."""
    traced: list[fit_loop.HeadSteps] = []
    kwargs = {} if class_weight is None else {"class_weight": class_weight}
    _assert_same(_both_ways(traced=traced, **kwargs))
    (steps,) = traced
    assert steps.train.experimental_get_tracing_count() == 1  # traced once, before the data
    assert steps.test.experimental_get_tracing_count() == 1
    assert (steps.steps, steps.validation_steps) == (STEPS, 2)


def test_fit_head_refuses_functions_traced_for_other_batches() -> None:
    train, val = _data()
    model = _model()
    other = fit_loop.trace_head(model, _zeros_like(train), STEPS + 1, validation=_zeros_like(val))
    with pytest.raises(ValueError, match="traced for 6 steps and 2 validation batches"):
        fit_loop.fit_head(model, train, STEPS, validation=val, epochs=1, verbose=0, traced=other)
    no_validation = fit_loop.trace_head(model, _zeros_like(train), STEPS)
    with pytest.raises(ValueError, match="but the data has 5 and 2"):
        fit_loop.fit_head(
            model, train, STEPS, validation=val, epochs=1, verbose=0, traced=no_validation
        )
