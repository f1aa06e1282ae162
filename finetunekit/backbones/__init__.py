"""Step 2: the pretrained backbone and the input adaptation around it."""

from finetunekit.backbones.backbone import Backbone, BuiltBackbone
from finetunekit.backbones.layers import ImageInputAdapter, ImagePreprocess
from finetunekit.backbones.text import TextBackbone, TextPreprocessor, TokenPooling
from finetunekit.backbones.video import BatchToFrames, FramesToBatch

__all__ = [
    "Backbone",
    "BuiltBackbone",
    "ImageInputAdapter",
    "ImagePreprocess",
    "TextBackbone",
    "TextPreprocessor",
    "TokenPooling",
    "FramesToBatch",
    "BatchToFrames",
]
