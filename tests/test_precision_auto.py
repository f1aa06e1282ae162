"""``Trainer(precision="auto")``: what it picks from (fake) device facts and timings.

No test here asserts a timing: the device facts and the measured seconds are
injected through ``compute.device_facts`` and ``compute.measure_policies``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import finetunekit as ftk
from finetunekit.training import compute
from finetunekit.training.compute import (
    AUTO_MIN_PARAMS,
    AutoPrecision,
    DeviceFacts,
    choose_precision,
    fast_bfloat16,
    measure_policies,
    precision_scope,
)

AVX512 = DeviceFacts(cpu_flags=frozenset({"avx512_bf16", "avx512f"}))
BIG = AUTO_MIN_PARAMS


@pytest.fixture(autouse=True)
def _fresh_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no remembered measurement."""
    monkeypatch.setattr(compute, "_MEASURED", {})


@pytest.mark.parametrize(
    ("facts", "fast", "fact"),
    [
        (DeviceFacts(), False, "CPU without amx_bf16 / avx512_bf16"),
        (DeviceFacts(cpu_flags=frozenset({"avx512f", "avx2"})), False, "CPU without"),
        (AVX512, True, "CPU flags avx512_bf16"),
        (
            DeviceFacts(cpu_flags=frozenset({"amx_bf16", "amx_tile", "avx512_bf16"})),
            True,
            "CPU flags amx_bf16, avx512_bf16",
        ),
        (DeviceFacts(gpu_capabilities=((8, 0),)), True, "GPU compute capability 8.0"),
        (DeviceFacts(gpu_capabilities=((9, 0), (7, 0))), False, "7.0 (bfloat16 needs 8.0+)"),
        # a GPU decides, whatever the CPU flags
        (DeviceFacts(cpu_flags=AVX512.cpu_flags, gpu_capabilities=((7, 5),)), False, "7.5"),
        (DeviceFacts(tpu=True), True, "TPU"),
    ],
)
def test_which_devices_count_as_fast_bfloat16(facts, fast, fact):
    got_fast, got_fact = fast_bfloat16(facts)
    assert got_fast is fast
    assert fact in got_fact


class _Timings:
    """A fake measurement: returns the given seconds and counts its calls."""

    def __init__(self, float32: float, bfloat16: float) -> None:
        self.seconds = {"float32": float32, "mixed_bfloat16": bfloat16}
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        self.calls += 1
        return dict(self.seconds)


def test_choose_measures_only_on_fast_devices_and_big_models():
    """No fast bfloat16 or a small model: float32 without measuring; otherwise the timing
    decides, bfloat16 only when at least AUTO_MIN_SPEEDUP faster."""
    timings = _Timings(1.0, 0.5)
    choice = choose_precision(params=BIG * 10, facts=DeviceFacts(), measure=timings)
    assert (choice.policy, timings.calls) == ("float32", 0)
    assert choice.reason.startswith("no fast bfloat16 on this device")
    choice = choose_precision(params=BIG - 1, facts=AVX512, measure=timings)
    assert (choice.policy, timings.calls) == ("float32", 0)
    assert choice.reason.startswith("too small to gain")
    choice = choose_precision(params=BIG, facts=AVX512, measure=timings)
    assert (choice.policy, timings.calls) == ("mixed_bfloat16", 1)
    assert "2.00x faster" in choice.reason and "1000.0 ms float32" in choice.reason
    assert choice.info()["seconds"] == {"float32": 1.0, "mixed_bfloat16": 0.5}
    # faster, but not by 1.1x: float32, with the figures
    slight = _Timings(1.0, 1.0 / 1.05)
    choice = choose_precision(params=BIG, facts=AVX512, measure=slight)
    assert choice.policy == "float32" and "1.05x" in choice.reason and slight.calls == 1
    choice = choose_precision(params=BIG, facts=AVX512, measure=_Timings(1.0, 1.0 / 1.1))
    assert choice.policy == "mixed_bfloat16"
    # a phase too short to win the measurement back: float32, not measured
    short = _Timings(1.0, 0.5)
    choice = choose_precision(params=BIG, facts=AVX512, measure=short, steps=63)
    assert (choice.policy, short.calls) == ("float32", 0)
    assert choice.reason == "too short to gain: 63 training steps < 64"
    assert choose_precision(params=BIG, facts=AVX512, measure=short, steps=64).policy == (
        "mixed_bfloat16"
    )
    # where steps cannot be timed (TPU strategy) the device decides
    unmeasured = _Timings(1.0, 2.0)
    choice = choose_precision(
        params=BIG, facts=DeviceFacts(tpu=True), measure=unmeasured, measurable=False
    )
    assert (choice.policy, unmeasured.calls) == ("mixed_bfloat16", 0)


def test_device_facts_reads_the_gpu_capability(monkeypatch):
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    cpu = tf.config.PhysicalDevice(name="/physical_device:CPU:0", device_type="CPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda *a: [cpu, gpu])
    monkeypatch.setattr(
        tf.config.experimental,
        "get_device_details",
        lambda device: {"compute_capability": (8, 6)} if device is gpu else {},
    )
    facts = compute.device_facts()
    assert facts.gpu_capabilities == ((8, 6),) and facts.tpu is False
    assert fast_bfloat16(facts) == (True, "GPU compute capability 8.6")


def _auto_model() -> keras.Model:
    """Conv backbone + head built under precision_scope("auto"); head_output asks float32."""
    with precision_scope("auto"):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        backbone = keras.Model(inputs, x, name="backbone")
        raw = keras.Input((8, 8, 3))
        h = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone(raw))
        h = keras.layers.Dense(5, name="head_dense_0")(h)
        out = keras.layers.Dense(3, dtype="float32", name="head_output")(h)
        return keras.Model(raw, out, name="full")


def test_auto_switches_the_layers_built_in_the_scope_and_keeps_the_output_float32(monkeypatch):
    monkeypatch.setattr(compute, "AUTO_MIN_PARAMS", 0)
    faster = _Timings(1.0, 0.5)
    monkeypatch.setattr(compute, "measure_policies", faster)
    model = _auto_model()
    backbone = model.get_layer("backbone")
    auto = AutoPrecision("auto", model, facts=AVX512)
    assert keras.config.dtype_policy().name == "float32"  # the scope restored the global one
    choice = auto.choose(model, "full", batch_size=4)
    assert choice.policy == "mixed_bfloat16" and faster.calls == 1
    assert backbone.get_layer("c1").compute_dtype == "bfloat16"
    assert model.get_layer("head_dense_0").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)
    assert model.get_layer("head_output").compute_dtype == "float32"
    values = model(np.ones((2, 8, 8, 3), "float32"))
    assert values.dtype == tf.float32
    # the same step, model and batch again: remembered, not measured again
    assert auto.choose(model, "full", batch_size=4) == choice and faster.calls == 1
    # another phase decides float32: every switched layer gets its float32 policy back
    monkeypatch.setattr(compute, "measure_policies", _Timings(1.0, 1.0))
    backbone.trainable = False
    assert auto.choose(model, "frozen", batch_size=4).policy == "float32"
    assert backbone.get_layer("c1").compute_dtype == "float32"
    assert model.get_layer("head_dense_0").compute_dtype == "float32"
    # a fresh AutoPrecision finds the same switchable layers again (the marks are back)
    assert len(AutoPrecision("auto", model).layers) == len(auto.layers) > 0


def test_auto_leaves_a_model_built_elsewhere_and_explicit_settings_alone(monkeypatch):
    monkeypatch.setattr(compute, "measure_policies", _Timings(1.0, 0.1))
    monkeypatch.setattr(compute, "AUTO_MIN_PARAMS", 0)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    choice = AutoPrecision("auto", plain, facts=AVX512).choose(plain, "full", 4)
    assert choice.policy == "float32" and "not built under precision='auto'" in choice.reason
    explicit = AutoPrecision("float32", _auto_model(), facts=AVX512)
    assert explicit.layers == []
    assert explicit.choose(plain, "full", 4).reason == "set by Trainer(precision='float32')"


def test_measure_policies_times_both_policies_and_changes_no_state():
    """A real (tiny) measurement: both policies traced and timed, BatchNorm statistics and
    the Dropout seed as before, nothing trained."""
    model = _auto_model()
    with precision_scope("auto"):
        raw = keras.Input((8, 8, 3))
        x = keras.layers.BatchNormalization(name="bn_train")(raw)
        x = keras.layers.Dropout(0.5, name="drop")(x)
        wrapped = keras.Model(raw, model(x))
    auto = AutoPrecision("auto", wrapped, facts=AVX512)
    applied: list[str] = []

    def apply(policy: str) -> None:
        applied.append(policy)
        auto.apply(policy)

    before = [v.numpy().copy() for v in wrapped.variables]
    seconds = measure_policies(wrapped, 4, apply, repeats=2)
    assert applied == ["float32", "mixed_bfloat16"]
    assert set(seconds) == {"float32", "mixed_bfloat16"} and min(seconds.values()) > 0
    for value, variable in zip(before, wrapped.variables, strict=True):
        np.testing.assert_array_equal(value, variable.numpy(), err_msg=variable.path)


def _tiny_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    return rng.normal(size=(24, 8, 8, 3)).astype("float32") + y[:, None, None, None], y


def _tiny_data() -> Any:
    return ftk.DatasetAdapter.from_arrays(*_tiny_arrays())


def _fit(trainer: ftk.Trainer) -> Any:
    net = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.ReLU()], name="net"
    )
    return (
        ftk.FineTuner()
        .with_data(_tiny_data(), validation=None)
        .with_backbone(ftk.Backbone.from_model(net))
        .with_trainer(trainer)
        .fit()
    )


def test_a_tiny_fit_with_the_default_picks_float32_without_measuring(monkeypatch):
    """The default is "auto"; on a device with fast bfloat16 a tiny model is too small to
    gain, so nothing is timed and both phases run in float32, and info says why."""
    assert ftk.Trainer().precision == "auto"
    monkeypatch.setattr(compute, "device_facts", lambda: AVX512)

    def never(*args: Any, **kwargs: Any) -> dict[str, float]:
        raise AssertionError("a tiny model must not be measured")

    monkeypatch.setattr(compute, "measure_policies", never)
    result = _fit(ftk.Trainer(epochs=2, fine_tune_epochs=1, batch_size=8, verbose=0, seed=0))
    info = result.info["precision"]
    assert [info[p]["policy"] for p in ("phase1", "phase2")] == ["float32", "float32"]
    assert all(info[p]["reason"].startswith("too small to gain") for p in info)
    assert all(layer.compute_dtype == "float32" for layer in result.model.layers)


def test_auto_fit_runs_each_phase_in_the_policy_it_measured_faster(monkeypatch):
    """Fake timings: bfloat16 faster for the full model (phase 2), not for the cached
    head (phase 1): phase 1 float32, phase 2 and the result in bfloat16, output float32."""
    monkeypatch.setattr(compute, "device_facts", lambda: AVX512)
    monkeypatch.setattr(compute, "AUTO_MIN_PARAMS", 0)
    monkeypatch.setattr(compute, "AUTO_MIN_STEPS", 0)
    calls: list[str] = []

    def timings(model: keras.Model, batch_size: int, apply: Any, **kw: Any) -> dict[str, float]:
        assert kw == {"agree": compute.AUTO_MIN_SPEEDUP}  # two agreeing rounds are enough
        calls.append(model.name)
        bf16 = 2.0 if model.name.endswith("_head") else 0.5
        return {"float32": 1.0, "mixed_bfloat16": bf16}

    monkeypatch.setattr(compute, "measure_policies", timings)
    trainer = ftk.Trainer(epochs=2, fine_tune_epochs=1, batch_size=8, verbose=0, seed=0)
    result = _fit(trainer)
    info = result.info["precision"]
    assert result.info["feature_cache"]["used"] is True
    assert calls == ["finetuned_net_head", "finetuned_net"]
    assert info["phase1"]["policy"] == "float32" and "0.50x" in info["phase1"]["reason"]
    assert info["phase2"]["policy"] == "mixed_bfloat16" and "2.00x" in info["phase2"]["reason"]
    assert result.model.get_layer("head_pool").compute_dtype == "bfloat16"
    assert result.model.get_layer("head_output").compute_dtype == "float32"
    assert result.predict(_tiny_arrays()[0][:3]).dtype == np.float32


def test_auto_fit_counts_each_phase_steps_and_skips_short_phases(monkeypatch):
    """Past the size threshold, a phase shorter than AUTO_MIN_STEPS is not measured: 24
    examples in batches of 8 are 3 steps per epoch, so 2 + 1 epochs are 6 and 3 steps."""
    monkeypatch.setattr(compute, "device_facts", lambda: AVX512)
    monkeypatch.setattr(compute, "AUTO_MIN_PARAMS", 0)

    def never(*args: Any, **kwargs: Any) -> dict[str, float]:
        raise AssertionError("a short phase must not be measured")

    monkeypatch.setattr(compute, "measure_policies", never)
    result = _fit(ftk.Trainer(epochs=2, fine_tune_epochs=1, batch_size=8, verbose=0, seed=0))
    info = result.info["precision"]
    assert info["phase1"]["reason"] == "too short to gain: 6 training steps < 64"
    assert info["phase2"]["reason"] == "too short to gain: 3 training steps < 64"


class _ScriptedClock:
    """A clock whose consecutive (start, end) readings take the scripted seconds, in order."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = list(durations)
        self.reads = 0
        self.now = 0.0
        self._start = True

    def __call__(self) -> float:
        self.reads += 1
        if not self._start:
            self.now += self.durations.pop(0)
        self._start = not self._start
        return self.now


@pytest.mark.parametrize(
    ("durations", "rounds", "medians"),
    [
        # float32, bfloat16 per round: both rounds 2x -> the decision is made after two
        ([1.0, 0.5, 1.2, 0.6], 2, {"float32": 1.1, "mixed_bfloat16": 0.55}),
        # both rounds level -> float32 either way, two rounds
        ([1.0, 1.0, 1.0, 0.95], 2, {"float32": 1.0, "mixed_bfloat16": 0.975}),
        # the rounds disagree (2x, then level) -> a third round, medians of three
        ([1.0, 0.5, 1.0, 1.0, 1.0, 0.6], 3, {"float32": 1.0, "mixed_bfloat16": 0.6}),
    ],
)
def test_measure_policies_stops_once_two_rounds_agree(durations, rounds, medians):
    """With ``agree``, two rounds on the same side of the threshold end the measurement; rounds
    on both sides get a third. The medians are those of the rounds run (hand-computed)."""
    clock = _ScriptedClock(durations)
    net = _auto_model()
    seconds = measure_policies(net, 2, lambda policy: None, agree=1.1, clock=clock)
    assert clock.reads == 4 * rounds  # start and end of each policy's step, per round
    assert seconds == pytest.approx(medians)
    clock = _ScriptedClock([1.0, 0.5] * 3)
    measure_policies(net, 2, lambda policy: None, clock=clock)  # no agree: every round
    assert clock.reads == 12
