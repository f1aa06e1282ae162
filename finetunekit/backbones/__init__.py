"""Step 2: the pretrained backbone and the input adaptation around it."""

from finetunekit.backbones.backbone import Backbone, BuiltBackbone
from finetunekit.backbones.layers import ImageInputAdapter, ImagePreprocess

__all__ = ["Backbone", "BuiltBackbone", "ImageInputAdapter", "ImagePreprocess"]
