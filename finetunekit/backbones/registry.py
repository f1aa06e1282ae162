"""The registry of ``keras.applications`` backbones.

Each entry names the Keras constructor, the module whose ``preprocess_input``
the model expects, its default and minimum input size, and which input
normalisation that ``preprocess_input`` performs:

* ``"caffe"``: RGB -> BGR, then subtract the ImageNet channel means (0-255 input).
* ``"tf"``: scale 0-255 to [-1, 1].
* ``"torch"``: scale 0-255 to [0, 1], then standardise with ImageNet mean/std.
* ``"none"``: the model normalises inside itself and takes 0-255 input as is.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = ["BackboneSpec", "REGISTRY", "normalise_name", "lookup", "suggest", "available"]


@dataclass(frozen=True)
class BackboneSpec:
    """Facts about one ``keras.applications`` model."""

    name: str
    constructor: str
    module: str
    default_size: int
    min_size: int
    preprocessing: str


def _family(
    module: str, preprocessing: str, min_size: int, entries: dict[str, tuple[str, int]]
) -> list[BackboneSpec]:
    return [
        BackboneSpec(name, ctor, module, size, min_size, preprocessing)
        for name, (ctor, size) in entries.items()
    ]


_SPECS: list[BackboneSpec] = [
    *_family("vgg16", "caffe", 32, {"vgg16": ("VGG16", 224)}),
    *_family("vgg19", "caffe", 32, {"vgg19": ("VGG19", 224)}),
    *_family(
        "resnet",
        "caffe",
        32,
        {
            "resnet50": ("ResNet50", 224),
            "resnet101": ("ResNet101", 224),
            "resnet152": ("ResNet152", 224),
        },
    ),
    *_family(
        "resnet_v2",
        "tf",
        32,
        {
            "resnet50_v2": ("ResNet50V2", 224),
            "resnet101_v2": ("ResNet101V2", 224),
            "resnet152_v2": ("ResNet152V2", 224),
        },
    ),
    *_family("xception", "tf", 71, {"xception": ("Xception", 299)}),
    *_family("inception_v3", "tf", 75, {"inception_v3": ("InceptionV3", 299)}),
    *_family("inception_resnet_v2", "tf", 75, {"inception_resnet_v2": ("InceptionResNetV2", 299)}),
    *_family("mobilenet", "tf", 32, {"mobilenet": ("MobileNet", 224)}),
    *_family("mobilenet_v2", "tf", 32, {"mobilenet_v2": ("MobileNetV2", 224)}),
    *_family(
        "mobilenet_v3",
        "none",
        32,
        {
            "mobilenet_v3_small": ("MobileNetV3Small", 224),
            "mobilenet_v3_large": ("MobileNetV3Large", 224),
        },
    ),
    *_family(
        "densenet",
        "torch",
        32,
        {
            "densenet121": ("DenseNet121", 224),
            "densenet169": ("DenseNet169", 224),
            "densenet201": ("DenseNet201", 224),
        },
    ),
    *_family(
        "nasnet",
        "tf",
        32,
        {"nasnet_mobile": ("NASNetMobile", 224), "nasnet_large": ("NASNetLarge", 331)},
    ),
    *_family(
        "efficientnet",
        "none",
        32,
        {
            f"efficientnet_b{i}": (f"EfficientNetB{i}", size)
            for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))
        },
    ),
    *_family(
        "efficientnet_v2",
        "none",
        32,
        {
            "efficientnet_v2_b0": ("EfficientNetV2B0", 224),
            "efficientnet_v2_b1": ("EfficientNetV2B1", 240),
            "efficientnet_v2_b2": ("EfficientNetV2B2", 260),
            "efficientnet_v2_b3": ("EfficientNetV2B3", 300),
            "efficientnet_v2_s": ("EfficientNetV2S", 384),
            "efficientnet_v2_m": ("EfficientNetV2M", 480),
            "efficientnet_v2_l": ("EfficientNetV2L", 480),
        },
    ),
    *_family(
        "convnext",
        "none",
        32,
        {
            f"convnext_{size}": (f"ConvNeXt{size.capitalize()}", 224)
            for size in ("tiny", "small", "base", "large")
        }
        | {"convnext_xlarge": ("ConvNeXtXLarge", 224)},
    ),
]


def normalise_name(name: str) -> str:
    """Returns ``name`` lower-cased without ``_``, ``-``, ``.`` and spaces.

    Examples:
        >>> normalise_name("MobileNet_V3-Small")
        'mobilenetv3small'
    """
    return "".join(ch for ch in name.lower() if ch not in "_-. ")


REGISTRY: dict[str, BackboneSpec] = {normalise_name(s.name): s for s in _SPECS}
# Accept Keras' own class names too (e.g. "ResNet50V2" -> "resnet50v2" is already a key).
for _spec in _SPECS:
    REGISTRY.setdefault(normalise_name(_spec.constructor), _spec)


def lookup(name: str) -> BackboneSpec | None:
    """Returns the spec for a case/underscore-insensitive name, or ``None``."""
    return REGISTRY.get(normalise_name(name))


def available() -> list[str]:
    """Returns the canonical names of every registered backbone, sorted."""
    return sorted(s.name for s in _SPECS)


def suggest(name: str, n: int = 3) -> list[str]:
    """Returns up to ``n`` canonical names closest to ``name``."""
    key = normalise_name(name)
    canonical = {normalise_name(s.name): s.name for s in _SPECS}
    matches = difflib.get_close_matches(key, list(canonical), n=n, cutoff=0.5)
    return [canonical[m] for m in matches]
