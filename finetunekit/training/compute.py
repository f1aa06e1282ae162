"""Compute settings: XLA per phase and the precision (dtype policy) per phase.

The defaults come from measurements (see docs/performance.md): on CPU, XLA
makes every step through a convolutional backbone several times slower (its
CPU convolutions do not use oneDNN) and adds long compile times; for the
small head-only model trained on cached features it saves a little per step
but costs seconds of compiling, more than it saves over a typical frozen
phase. So on CPU every step kind runs without XLA. With a GPU or TPU, Keras'
own ``"auto"`` rule (XLA when the model supports it) applies.

``precision="auto"`` builds the model in float32 and decides per phase
(:class:`AutoPrecision`): bfloat16 mixed precision only where the device has
fast bfloat16 (:func:`fast_bfloat16`) and a few timed training steps of the
phase's model show it faster (:func:`measure_policies`); float32 otherwise,
and without measuring for models too small to gain (:data:`AUTO_MIN_PARAMS`)
or phases too short to (:data:`AUTO_MIN_STEPS`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from finetunekit.errors import TrainerError, format_error

__all__ = [
    "AUTO_MIN_PARAMS",
    "AUTO_MIN_STEPS",
    "JIT_SETTINGS",
    "PRECISIONS",
    "AutoPrecision",
    "DeviceFacts",
    "PrecisionChoice",
    "check_jit_compile",
    "check_precision",
    "choose_precision",
    "cpu_precision_warning",
    "device_facts",
    "fast_bfloat16",
    "has_accelerator",
    "measure_policies",
    "precision_scope",
    "resolve_jit_compile",
]

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_SETTINGS = ("auto", True, False)

# What "auto" picks per step kind on a CPU-only machine (measured, docs/performance.md).
_CPU_AUTO = {"features": False, "head": False, "frozen": False, "full": False}


def has_accelerator() -> bool:
    """Whether TensorFlow sees a GPU or TPU.

    Examples:
        >>> isinstance(has_accelerator(), bool)
        True
    """
    return any(d.device_type in ("GPU", "TPU") for d in tf.config.list_physical_devices())


def check_jit_compile(jit_compile: Any) -> bool | str:
    """Validates a ``jit_compile`` setting: ``"auto"``, ``True`` or ``False``.

    Examples:
        >>> check_jit_compile("auto")
        'auto'
    """
    if jit_compile not in JIT_SETTINGS or (
        not isinstance(jit_compile, bool) and jit_compile != "auto"
    ):
        raise TrainerError(
            format_error(
                "jit_compile must be 'auto', True or False",
                expected="'auto' (measured per phase), True (XLA) or False",
                received={"jit_compile": jit_compile},
                fix="Pass jit_compile='auto'",
            )
        )
    return "auto" if jit_compile == "auto" else bool(jit_compile)


def resolve_jit_compile(setting: bool | str, step: str) -> bool | str:
    """Returns the ``jit_compile`` value for ``step`` under ``setting``.

    ``"auto"`` on a CPU-only machine picks the measured faster choice per
    step (no XLA for any of them, see the module docstring); with a GPU or
    TPU it returns Keras' own ``"auto"`` (XLA where the model supports it)
    for compiled steps and ``False`` for the one-off feature pass.

    Args:
        setting: ``"auto"``, ``True`` or ``False`` (the ``Trainer`` argument).
        step: ``"features"`` (the one-off cached feature pass), ``"head"``
            (phase 1 on cached features), ``"frozen"`` (phase 1 through the
            frozen backbone) or ``"full"`` (phase 2).

    Examples:
        >>> resolve_jit_compile(False, "head")
        False
    """
    if setting != "auto":
        return bool(setting)
    if has_accelerator():
        return False if step == "features" else "auto"
    return _CPU_AUTO[step]


def check_precision(precision: Any) -> str:
    """Validates ``precision``: ``"auto"``, ``"float32"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``.

    Examples:
        >>> check_precision("auto")
        'auto'
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise TrainerError(
            format_error(
                "Unknown precision",
                expected=f"one of {PRECISIONS}",
                received={"precision": precision},
                fix="Pass precision='auto' (measured per phase), 'float32', or "
                "'mixed_float16' / 'mixed_bfloat16' on a GPU or TPU",
            )
        )
    return str(precision)


# The marker of layers built under precision="auto": they follow the per-phase choice.
_AUTO_MARK = "_finetunekit_auto_precision"


def cpu_precision_warning(precision: str, flags: frozenset[str]) -> str:
    """What an explicit 16-bit ``precision`` costs on a CPU with these ``flags``, as measured.

    The figures are the project's measurements on the kind of CPU the flags
    describe (``benchmarks/bench_precision.py``, docs/performance.md,
    "Precision"): one with AMX, one with AVX-512 BF16 only, or neither.

    Examples:
        >>> print(cpu_precision_warning("mixed_float16", frozenset()))  # doctest: +ELLIPSIS
        precision='mixed_float16' on a machine without GPU or TPU: float16 is meant for GPUs...
    """
    head = f"precision={precision!r} on a machine without GPU or TPU: "
    tail = " precision='auto' measures your model on your CPU and picks (docs/performance.md, 'Precision')"
    if precision == "mixed_float16":
        return (
            head + "float16 is meant for GPUs (with loss scaling); the project has not measured "
            "it on a CPU, and TensorFlow's CPU kernels have no float16 matrix unit path." + tail
        )
    if "amx_bf16" in flags:
        return (
            head + "this CPU has AMX. On a 2-core AMX CPU a mixed_bfloat16 training epoch ran "
            "at 0.59-0.60x the float32 speed on MobileNetV3Small (depthwise convolutions), "
            "1.00-1.17x on ResNet50 with BatchNorm training and 1.24-1.99x with BatchNorm "
            "frozen (as finetunekit's phase 2 runs it); it pays on large convolution and "
            "matmul models only." + tail
        )
    if "avx512_bf16" in flags:
        return (
            head + "this CPU has avx512_bf16 but no AMX. On such a 2-core CPU a mixed_bfloat16 "
            "training epoch ran at 0.56x the float32 speed on MobileNetV3Small and 1.00x on "
            "ResNet50; expect no gain." + tail
        )
    return (
        head + "this CPU has neither AMX nor avx512_bf16 (no bfloat16 units), a kind the "
        "project has not measured; even CPUs with those units ran MobileNetV3Small 0.56-0.60x "
        "as fast in mixed_bfloat16." + tail
    )


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Builds models under the Keras dtype policy ``precision``, then restores the old one.

    ``"mixed_float16"`` / ``"mixed_bfloat16"`` compute in 16 bits and keep
    float32 weights; Keras adds loss scaling for float16 when compiling. The
    head's output layer stays float32. ``"auto"`` builds in float32 and marks
    the layers made in the scope, so that :class:`AutoPrecision` can switch
    them per phase (layers that ask for float32 themselves, like the head's
    output, are not marked). On a machine without GPU or TPU an explicit
    mixed policy warns with what was measured on a CPU.

    Examples:
        >>> with precision_scope("float32"):
        ...     keras.layers.Dense(2).dtype_policy.name
        'float32'
        >>> with precision_scope("auto"):
        ...     keras.layers.Dense(2).dtype_policy.name
        'float32'
    """
    precision = check_precision(precision)
    if precision not in ("float32", "auto") and not has_accelerator():
        warnings.warn(cpu_precision_warning(precision, _cpu_flags()), UserWarning, stacklevel=3)
    previous = keras.config.dtype_policy()
    if precision == "auto":
        policy = keras.DTypePolicy("float32")
        setattr(policy, _AUTO_MARK, True)
        keras.config.set_dtype_policy(policy)
    else:
        keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------- precision="auto"
#: Below this many parameters in the phase's model, ``"auto"`` keeps float32 without
#: measuring. Measured (docs/performance.md, "Precision"): bfloat16 made a training epoch
#: of MobileNetV3Small (0.9M parameters) 0.56x as fast on an avx512_bf16 CPU and 0.60x
#: on an AMX CPU, while ResNet50 (23.6M) was level without AMX and 1.24-1.99x faster with;
#: the timing itself (tracing both policies) costs seconds a small model cannot win back.
AUTO_MIN_PARAMS = 5_000_000
#: bfloat16 must be this much faster than float32 in the measurement to be chosen.
AUTO_MIN_SPEEDUP = 1.1
#: A phase of fewer training steps keeps float32 without measuring: timing both policies
#: (two traces, 2 + 4 to 6 steps) costs about what a 1.5x faster policy saves over ~40 steps.
AUTO_MIN_STEPS = 64
AUTO_POLICIES = ("float32", "mixed_bfloat16")


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine offers for bfloat16: CPU flags, GPU compute capabilities, TPU.

    Examples:
        >>> DeviceFacts(cpu_flags=frozenset({"avx512_bf16"})).cpu_flags
        frozenset({'avx512_bf16'})
    """

    cpu_flags: frozenset[str] = frozenset()
    gpu_capabilities: tuple[tuple[int, int], ...] = ()
    tpu: bool = False


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            words = handle.read().split()
    except OSError:  # not Linux: no flags known, so no bfloat16 claim
        return frozenset()
    return frozenset(w for w in words if w.startswith("amx") or w == "avx512_bf16")


def device_facts() -> DeviceFacts:
    """The facts of this machine (``/proc/cpuinfo`` flags, TensorFlow's devices).

    Examples:
        >>> isinstance(device_facts().tpu, bool)
        True
    """
    devices = tf.config.list_physical_devices()
    capabilities = []
    for device in devices:
        if device.device_type == "GPU":
            details = tf.config.experimental.get_device_details(device)
            major, minor = details.get("compute_capability", (0, 0))
            capabilities.append((int(major), int(minor)))
    return DeviceFacts(
        cpu_flags=_cpu_flags(),
        gpu_capabilities=tuple(capabilities),
        tpu=any(d.device_type == "TPU" for d in devices),
    )


def fast_bfloat16(facts: DeviceFacts) -> tuple[bool, str]:
    """Whether the device computes bfloat16 fast, and the fact that says so.

    TPUs do; GPUs of compute capability 8.0 or more do (every GPU must); a
    CPU-only machine does when its flags include ``amx_bf16`` or
    ``avx512_bf16``.

    Examples:
        >>> fast_bfloat16(DeviceFacts(gpu_capabilities=((7, 5),)))
        (False, 'GPU compute capability 7.5 (bfloat16 needs 8.0+)')
        >>> fast_bfloat16(DeviceFacts(cpu_flags=frozenset({"avx512_bf16"})))
        (True, 'CPU flags avx512_bf16')
    """
    if facts.tpu:
        return True, "TPU"
    if facts.gpu_capabilities:
        low = min(facts.gpu_capabilities)
        if low >= (8, 0):
            return True, f"GPU compute capability {low[0]}.{low[1]}"
        return False, f"GPU compute capability {low[0]}.{low[1]} (bfloat16 needs 8.0+)"
    flags = sorted(f for f in facts.cpu_flags if f in ("amx_bf16", "avx512_bf16"))
    if flags:
        return True, "CPU flags " + ", ".join(flags)
    return False, "CPU without amx_bf16 / avx512_bf16"


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype policy a phase runs under, and why.

    Attributes:
        policy: ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.
        reason: one sentence (quoted in ``result.info["precision"]``).
        seconds: the measured median seconds per training step of each
            policy (``"auto"`` when it measured), else empty.
    """

    policy: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """``{"policy", "reason"}`` plus ``"seconds"`` when measured."""
        out: dict[str, Any] = {"policy": self.policy, "reason": self.reason}
        if self.seconds:
            out["seconds"] = dict(self.seconds)
        return out


def choose_precision(
    *,
    params: int,
    facts: DeviceFacts,
    measure: Callable[[], dict[str, float]],
    measurable: bool = True,
    steps: int | None = None,
) -> PrecisionChoice:
    """The rule of ``precision="auto"`` for one phase (``measure`` runs only when needed).

    Args:
        params: parameters of the model the phase trains (trainable or not).
        facts: the device (see :func:`device_facts`).
        measure: returns the median seconds per step of each of
            ``"float32"`` and ``"mixed_bfloat16"``.
        measurable: ``False`` where steps cannot be timed (a TPU strategy):
            the device facts decide alone.
        steps: training steps the phase runs (``None``: unknown); fewer
            than :data:`AUTO_MIN_STEPS` keep float32 without measuring.

    Examples:
        >>> never = lambda: {}  # not called for a small model
        >>> choose_precision(params=1000, facts=DeviceFacts(tpu=True), measure=never).reason
        'too small to gain: 1,000 parameters < 5,000,000'
        >>> slow = lambda: {"float32": 1.0, "mixed_bfloat16": 0.5}
        >>> choose_precision(params=10**8, facts=DeviceFacts(tpu=True), measure=slow).policy
        'mixed_bfloat16'
    """
    fast, fact = fast_bfloat16(facts)
    if not fast:
        return PrecisionChoice("float32", f"no fast bfloat16 on this device: {fact}")
    if params < AUTO_MIN_PARAMS:
        return PrecisionChoice(
            "float32", f"too small to gain: {params:,} parameters < {AUTO_MIN_PARAMS:,}"
        )
    if steps is not None and steps < AUTO_MIN_STEPS:
        return PrecisionChoice(
            "float32", f"too short to gain: {steps} training steps < {AUTO_MIN_STEPS}"
        )
    if not measurable:
        return PrecisionChoice("mixed_bfloat16", f"{fact}: bfloat16 is its native type")
    seconds = measure()
    f32, bf16 = seconds["float32"], seconds["mixed_bfloat16"]
    timing = f"{f32 * 1000:.1f} ms float32, {bf16 * 1000:.1f} ms mixed_bfloat16 per step"
    if bf16 * AUTO_MIN_SPEEDUP <= f32:
        return PrecisionChoice(
            "mixed_bfloat16", f"{fact}; measured {f32 / bf16:.2f}x faster ({timing})", seconds
        )
    return PrecisionChoice(
        "float32",
        f"{fact}, but measured not {AUTO_MIN_SPEEDUP}x faster: {f32 / bf16:.2f}x ({timing})",
        seconds,
    )


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    from finetunekit import _compat

    return [model, *(_compat.flatten_layers(model) or [])]


def _synthetic_batch(model: keras.Model, batch_size: int) -> Any:
    """A batch shaped like ``model``'s inputs (ones for integer inputs, noise otherwise)."""
    rng = np.random.default_rng(0)  # its own generator: the run's random state is untouched

    def make(spec: Any) -> np.ndarray:
        shape = [batch_size] + [64 if d is None else int(d) for d in spec.shape[1:]]
        dtype = str(spec.dtype)
        if dtype.startswith(("int", "uint")) or dtype == "bool":
            return np.ones(shape, dtype)
        return (rng.random(shape) * 255.0).astype(dtype)

    return keras.tree.map_structure(make, model.input)


def measure_policies(
    model: keras.Model,
    batch_size: int,
    apply: Callable[[str], None],
    *,
    repeats: int = 3,
    agree: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds of a training step of ``model`` in float32 and in mixed bfloat16.

    A step is the forward pass in training mode and the gradients of the
    trainable weights (what ``fit`` computes, without the optimizer update),
    on a synthetic batch of ``batch_size``. Each policy is traced once, then
    the two alternate for up to ``repeats`` rounds. With ``agree``, the
    measurement stops after two rounds when both rounds put the float32 /
    bfloat16 ratio on the same side of ``agree`` (both already point to one
    choice); a third round breaks a tie. On ResNet50 at batch 32 that saves
    about 1.2 s. Nothing of the model changes: its non-trainable state
    (BatchNorm statistics, seed generators) is restored.

    Args:
        model: the phase's model (as frozen or unfrozen as the phase trains it).
        batch_size: examples per step.
        apply: sets the switchable layers' policy (``AutoPrecision.apply``).
        repeats: the most timed steps per policy.
        agree: the speed-up the decision compares against, or ``None`` to
            always run ``repeats`` rounds.
        clock: the timer (seconds).

    Examples:
        >>> inputs = keras.Input((4,))
        >>> net = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> sorted(measure_policies(net, 8, lambda policy: None, repeats=1))
        ['float32', 'mixed_bfloat16']
    """
    x = _synthetic_batch(model, batch_size)
    state = [(v, v.numpy()) for v in model.non_trainable_variables]
    strategy = tf.distribute.get_strategy()
    steps: dict[str, Any] = {}
    try:
        for policy in AUTO_POLICIES:
            apply(policy)
            steps[policy] = _gradient_step(model, strategy)
            steps[policy](x)  # traced now, in this policy; later calls replay that graph
        seconds: dict[str, list[float]] = {policy: [] for policy in AUTO_POLICIES}
        for _ in range(repeats):
            for policy in AUTO_POLICIES:
                start = clock()
                steps[policy](x)
                seconds[policy].append(clock() - start)
            if agree is not None and _rounds_agree(seconds, agree):
                break
    finally:
        for variable, value in state:
            variable.assign(value)
    return {policy: statistics.median(values) for policy, values in seconds.items()}


def _rounds_agree(seconds: dict[str, list[float]], agree: float) -> bool:
    """Whether two or more rounds were timed and each one's float32 / bfloat16 ratio is on the
    same side of ``agree``.

    Examples:
        >>> _rounds_agree({"float32": [1.0, 1.0], "mixed_bfloat16": [0.5, 0.6]}, 1.1)
        True
        >>> _rounds_agree({"float32": [1.0, 1.0], "mixed_bfloat16": [0.5, 1.0]}, 1.1)
        False
        >>> _rounds_agree({"float32": [1.0], "mixed_bfloat16": [0.5]}, 1.1)
        False
    """
    f32, bf16 = seconds["float32"], seconds["mixed_bfloat16"]
    if len(f32) < 2:
        return False
    sides = {a >= agree * b for a, b in zip(f32, bf16, strict=True)}
    return len(sides) == 1


def _gradient_step(model: keras.Model, strategy: Any) -> Callable[[Any], Any]:
    variables = model.trainable_variables

    def replica_step(x: Any) -> Any:
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.add_n(
                [tf.reduce_mean(tf.cast(o, "float32")) for o in keras.tree.flatten(outputs)]
            )
        total = loss
        for grad in tape.gradient(loss, variables):
            if grad is None:
                continue
            values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
            total += tf.reduce_sum(tf.cast(values, "float32"))  # every gradient is used
        return total

    @tf.function(jit_compile=False)
    def step(x: Any) -> Any:
        return strategy.run(replica_step, args=(x,))

    def run(x: Any) -> Any:
        return [t.numpy() for t in strategy.experimental_local_results(step(x))]

    return run


# timings already measured in this process: (step, model structure, batch, device) -> seconds
_MEASURED: dict[Any, dict[str, float]] = {}


class AutoPrecision:
    """Applies ``Trainer(precision=...)`` per phase to a model built under :func:`precision_scope`.

    With ``"auto"`` the layers built in the scope (marked there) switch
    between float32 and mixed bfloat16 per phase as :func:`choose_precision`
    decides; measured timings are kept per (step, model structure, batch
    size, device) for the rest of the process. Other settings were applied when
    the model was built and are reported as they are.

    Args:
        setting: the Trainer's ``precision``.
        model: the full model (its marked layers switch).
        facts: the device facts; default :func:`device_facts`.

    Examples:
        >>> with precision_scope("auto"):
        ...     net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> auto = AutoPrecision("auto", net, facts=DeviceFacts())
        >>> auto.choose(net, "full", batch_size=8).info()
        {'policy': 'float32', 'reason': 'no fast bfloat16 on this device: CPU without amx_bf16 / avx512_bf16'}
    """

    def __init__(self, setting: str, model: keras.Model, facts: DeviceFacts | None = None):
        self.setting = check_precision(setting)
        self.facts = facts
        self.layers = (
            [layer for layer in _flat_layers(model) if getattr(layer.dtype_policy, _AUTO_MARK, 0)]
            if self.setting == "auto"
            else []
        )
        self._originals = [layer.dtype_policy for layer in self.layers]
        self.policy = "float32"

    def apply(self, policy: str) -> None:
        """Sets every switchable layer's dtype policy to ``policy`` (float32 restores the marks)."""
        if policy == self.policy:
            return
        shared = keras.DTypePolicy(policy)
        for layer, original in zip(self.layers, self._originals, strict=True):
            layer.dtype_policy = original if policy == "float32" else shared
        self.policy = policy

    def choose(
        self, phase_model: keras.Model, step: str, batch_size: int, steps: int | None = None
    ) -> PrecisionChoice:
        """Decides and applies the policy of one phase (timings measured once per process).

        Args:
            phase_model: the model the phase trains (the full model, or the
                head on cached features), frozen as the phase trains it.
            step: ``"head"``, ``"frozen"`` or ``"full"`` (see :func:`resolve_jit_compile`).
            batch_size: the global batch size.
            steps: training steps of the phase, or ``None`` when unknown.
        """
        if self.setting != "auto":
            return PrecisionChoice(self.setting, f"set by Trainer(precision={self.setting!r})")
        if not self.layers:
            return PrecisionChoice(
                "float32",
                "the model was not built under precision='auto' (a model of your own: "
                "build it under the policy you want)",
            )
        facts = self.facts if self.facts is not None else device_facts()
        key = (
            step,
            batch_size,
            facts,
            tuple((w.path, tuple(w.shape), w.trainable) for w in phase_model.weights),
        )

        def measure() -> dict[str, float]:
            if key not in _MEASURED:
                _MEASURED[key] = measure_policies(
                    phase_model, batch_size, self.apply, agree=AUTO_MIN_SPEEDUP
                )
            return _MEASURED[key]

        strategy = tf.distribute.get_strategy()
        choice = choose_precision(
            params=sum(int(np.prod(w.shape)) for w in phase_model.weights),  # built or not
            facts=facts,
            measure=measure,
            measurable=not facts.tpu and not isinstance(strategy, tf.distribute.TPUStrategy),
            steps=steps,
        )
        self.apply(choice.policy)
        return choice
