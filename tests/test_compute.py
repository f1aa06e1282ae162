"""Compute settings: what ``jit_compile="auto"`` resolves to, and mixed precision training."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.training import compute, feature_cache
from finetunekit.training.compute import (
    cpu_precision_warning,
    has_accelerator,
    precision_scope,
    resolve_jit_compile,
)

_STEPS = ("features", "head", "frozen", "full")


def _devices(*kinds: str) -> list[Any]:
    return [
        tf.config.PhysicalDevice(name=f"/physical_device:{kind}:0", device_type=kind)
        for kind in ("CPU", *kinds)
    ]


@pytest.fixture
def fake_devices(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``fake_devices("GPU")`` makes TensorFlow report a CPU plus those devices."""

    def use(*kinds: str) -> None:
        devices = _devices(*kinds)
        monkeypatch.setattr(tf.config, "list_physical_devices", lambda *args: list(devices))

    return use


def test_jit_auto_is_off_for_every_step_on_a_cpu_only_machine(fake_devices):
    """On CPU, "auto" picks no XLA for any step kind; True / False pass through."""
    fake_devices()
    assert has_accelerator() is False
    for step in _STEPS:
        assert resolve_jit_compile("auto", step) is False, step
        assert resolve_jit_compile(True, step) is True, step
        assert resolve_jit_compile(False, step) is False, step


@pytest.mark.parametrize("kind", ["GPU", "TPU"])
def test_jit_auto_with_an_accelerator_defers_to_keras_except_the_feature_pass(fake_devices, kind):
    """With a GPU or TPU, compiled steps get Keras' own "auto"; the one-off pass gets False."""
    fake_devices(kind)
    assert has_accelerator() is True
    assert resolve_jit_compile("auto", "features") is False
    for step in ("head", "frozen", "full"):
        assert resolve_jit_compile("auto", step) == "auto", step
    for step in _STEPS:
        assert resolve_jit_compile(True, step) is True and resolve_jit_compile(False, step) is False


def _jit_model() -> tuple[keras.Model, keras.Model]:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    backbone = keras.Model(inputs, x, name="backbone")
    raw = keras.Input((8, 8, 3))
    h = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone(raw, training=False))
    out = keras.layers.Dense(3, activation="softmax", name="head_output")(h)
    return keras.Model(raw, out, name="full"), backbone


@pytest.mark.parametrize("accelerator", [False, True], ids=["cpu", "fake-accelerator"])
def test_each_phase_is_compiled_with_the_resolved_jit_setting(monkeypatch, accelerator):
    """Trainer(jit_compile="auto") hands every compile (full model in phases 1 and 2, the
    head-only model on cached features) and the feature pass what resolve_jit_compile says."""
    real_accelerator = has_accelerator()
    monkeypatch.setattr(compute, "has_accelerator", lambda: accelerator)
    compiled: list[tuple[str, Any, Any]] = []
    real_compile = keras.Model.compile

    def compile_spy(self: keras.Model, *args: Any, **kwargs: Any) -> None:
        real_compile(self, *args, **kwargs)
        compiled.append((self.name, kwargs.get("jit_compile"), self.jit_compile))

    feature_jit: list[bool] = []
    real_build = feature_cache.FeatureCache.build

    def build_spy(self: Any) -> None:
        feature_jit.append(self.jit_compile)
        real_build(self)

    monkeypatch.setattr(keras.Model, "compile", compile_spy)
    monkeypatch.setattr(feature_cache.FeatureCache, "build", build_spy)
    rng = np.random.default_rng(0)
    data = ftk.DatasetAdapter.from_arrays(
        rng.normal(size=(18, 8, 8, 3)).astype("float32"), np.arange(18) % 3
    )
    model, backbone = _jit_model()
    trainer = ftk.Trainer(epochs=2, fine_tune_epochs=1, batch_size=8, verbose=0, seed=0)
    run = trainer.train(
        model,
        backbone,
        data.as_dataset(8, shuffle=True, seed=0),
        loss="categorical_crossentropy",
        train_data=data,
    )
    assert run.info["feature_cache"]["used"] is True
    requested = "auto" if accelerator else False
    assert [(name, asked) for name, asked, _ in compiled] == [
        ("full", requested),  # phase 1, full model (then trained on cached features:)
        ("full_head", requested),  # phase 1, head-only model
        ("full", requested),  # phase 2
    ]
    assert feature_jit == [False]
    # Keras resolves its own "auto" against the real devices: XLA only with a GPU / TPU
    resolved = real_accelerator if accelerator else False
    assert [jit for _, _, jit in compiled] == [resolved] * 3


def test_precision_scope_sets_the_policy_and_restores_the_previous_one(fake_devices):
    """Inside: the mixed policy (float32 variables, bfloat16 compute); after, even after an
    error: whatever policy was set before (not just float32)."""
    fake_devices()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        with pytest.warns(UserWarning, match="without GPU or TPU"):
            with precision_scope("mixed_bfloat16"):
                assert keras.config.dtype_policy().name == "mixed_bfloat16"
                dense = keras.layers.Dense(2)
                dense.build((None, 3))
        assert dense.compute_dtype == "bfloat16" and dense.variable_dtype == "float32"
        assert keras.config.dtype_policy().name == "mixed_float16"
        with pytest.raises(RuntimeError), pytest.warns(UserWarning):
            with precision_scope("mixed_bfloat16"):
                raise RuntimeError("build failed")
        assert keras.config.dtype_policy().name == "mixed_float16"
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize(("precision", "kinds"), [("float32", ()), ("mixed_bfloat16", ("GPU",))])
def test_precision_scope_warns_only_for_mixed_precision_on_cpu(fake_devices, precision, kinds):
    """No warning for float32, nor for a mixed policy when an accelerator is present."""
    fake_devices(*kinds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with precision_scope(precision):
            assert keras.config.dtype_policy().name == precision
    assert keras.config.dtype_policy().name == "float32"


def test_head_output_stays_float32_under_a_mixed_policy():
    """HeadReplacer under mixed_bfloat16: hidden layers compute in bfloat16, the output
    layer and the returned values are float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the CPU warning
        with precision_scope("mixed_bfloat16"):
            features = keras.Input((3, 3, 4))
            head = ftk.HeadReplacer(hidden_units=(8,), dropout=0.0)
            model = keras.Model(features, head.build(features, task="multiclass", units=3))
    assert model.get_layer("head_dense_0").compute_dtype == "bfloat16"  # the policy applied
    output_layer = model.get_layer("head_output")
    assert output_layer.compute_dtype == "float32" and output_layer.variable_dtype == "float32"
    assert model.output.dtype == "float32"
    values = model(np.ones((2, 3, 3, 4), "float32"))
    assert values.dtype == tf.float32


def _mixed_backbone(seed: int) -> keras.Model:
    """A 16x16x3 conv backbone whose pooled features carry the images' brightness."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    init = keras.initializers.RandomUniform(0.0, 0.2, seed=seed)
    x = keras.layers.Conv2D(4, 3, strides=2, kernel_initializer=init, name="c1")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.ReLU()(x), name="tiny")


class _HeadKernelAtStart(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.kernels: list[np.ndarray] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.kernels.append(self.model.get_layer("head_output").kernel.numpy().copy())


@pytest.mark.slow
def test_mixed_bfloat16_fit_trains_like_float32():
    """Trainer(precision="mixed_bfloat16") really computes in bfloat16 (results differ
    from float32 by rounding), keeps float32 variables and output, trains as well as
    float32 on an easy task, and leaves the global dtype policy as it was.

    Measured with this recipe for seeds 0-5 (data, initialisation, Trainer): both
    precisions reached the same accuracy every time (1.0 for seeds 1-5); the largest
    |p_bf16 - p_f32| of a run was 0.0012-0.0042 and the largest relative difference
    of an epoch's loss 0.07-0.51%. Seed 3 is used; tolerances are about 4x the
    worst measured.
    """
    seed = 3
    rng = np.random.default_rng(seed)
    y = np.arange(48) % 2
    x = rng.integers(0, 100, (48, 16, 16, 3)).astype("uint8")
    x[y == 1] += 120
    data = ftk.DatasetAdapter.from_arrays(x, y)
    net = _mixed_backbone(seed)
    results, starts = {}, {}
    for precision in ("float32", "mixed_bfloat16"):
        starts[precision] = _HeadKernelAtStart()
        trainer = ftk.Trainer(
            epochs=3,
            fine_tune_epochs=1,
            batch_size=8,
            learning_rate=0.05,
            seed=seed,
            verbose=0,
            precision=precision,
            callbacks=[starts[precision]],
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[precision] = (
                ftk.FineTuner()
                .with_data(data, validation=None)
                .with_backbone(ftk.Backbone.from_model(net))
                .with_head(ftk.HeadReplacer(hidden_units=(8,), dropout=0.0))
                .with_trainer(trainer)
                .fit()
            )
        cpu_warned = any("without GPU or TPU" in str(w.message) for w in caught)
        assert cpu_warned == (precision != "float32" and not has_accelerator())
        assert keras.config.dtype_policy().name == "float32"  # restored after fit
    mixed, plain = results["mixed_bfloat16"], results["float32"]
    model = mixed.model
    assert model.get_layer("head_dense_0").compute_dtype == "bfloat16"
    assert plain.model.get_layer("head_dense_0").compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.weights)
    assert model.get_layer("head_output").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    p_mixed, p_plain = mixed.predict(x).reshape(-1), plain.predict(x).reshape(-1)
    assert p_mixed.dtype == np.float32
    # weights changed and the loss fell
    kernel = model.get_layer("head_output").kernel.numpy()
    assert not np.allclose(kernel, starts["mixed_bfloat16"].kernels[0])
    loss = mixed.history["loss"]
    assert loss[-1] < 0.8 * loss[0]
    # same learning as float32, up to bfloat16 rounding
    acc_mixed, acc_plain = np.mean((p_mixed > 0.5) == y), np.mean((p_plain > 0.5) == y)
    assert acc_plain == 1.0 and acc_mixed >= acc_plain - 1 / 48  # at most one example apart
    diff = np.abs(p_mixed - p_plain).max()
    assert 1e-5 < diff < 0.02  # > 0: bfloat16 really ran; measured 0.0012-0.0042
    np.testing.assert_allclose(loss, plain.history["loss"], rtol=0.02)  # measured <= 0.51%


@pytest.mark.parametrize(
    ("precision", "flags", "says", "not_says"),
    [
        ("mixed_bfloat16", {"amx_bf16", "amx_tile", "avx512_bf16"}, "has AMX", "no AMX"),
        ("mixed_bfloat16", {"avx512_bf16"}, "avx512_bf16 but no AMX", "has AMX"),
        ("mixed_bfloat16", set(), "neither AMX nor avx512_bf16", "training epoch ran"),
        ("mixed_float16", {"amx_bf16", "avx512_bf16"}, "float16 is meant for GPUs", "AMX"),
    ],
)
def test_cpu_precision_warning_names_what_was_measured_on_this_kind_of_cpu(
    precision, flags, says, not_says
):
    """The warning speaks of this machine's CPU (its flags), not of another one."""
    text = cpu_precision_warning(precision, frozenset(flags))
    assert text.startswith(f"precision={precision!r} on a machine without GPU or TPU")
    assert says in text and not_says not in text
    assert "precision='auto'" in text


def test_precision_scope_warns_with_this_machines_flags(fake_devices, monkeypatch):
    """The warning the scope raises is the one for /proc/cpuinfo's flags."""
    fake_devices()
    monkeypatch.setattr(compute, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    with pytest.warns(UserWarning, match="avx512_bf16 but no AMX"):
        with precision_scope("mixed_bfloat16"):
            pass
    keras.config.set_dtype_policy("float32")
