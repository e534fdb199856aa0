"""Model zoo: backbones (one registry), heads (another), input adaptation and offline pretrained weights.

``create_model(name, head=..., channels=..., pretrained=...)`` returns a :class:`CxrModel` that takes a gray
batch (B, 1, H, W) in [0, 1] whatever the backbone; ``list_models()`` / ``list_heads()`` name what exists;
``model_complexity()`` counts parameters and GMACs (``cxr-bench models`` prints the table).
"""

from .adapt import CHANNEL_MODES
from .backbones import BACKBONES, Backbone, build_backbone
from .factory import (
    CxrModel,
    complexity_table,
    create_model,
    list_heads,
    list_models,
    model_complexity,
    resolved_head_kwargs,
)
from .heads import HEADS, Head
from .pooling import GlobalPool, lse_pool

__all__ = [
    "BACKBONES",
    "CHANNEL_MODES",
    "HEADS",
    "Backbone",
    "CxrModel",
    "GlobalPool",
    "Head",
    "build_backbone",
    "complexity_table",
    "create_model",
    "list_heads",
    "list_models",
    "lse_pool",
    "model_complexity",
    "resolved_head_kwargs",
]
