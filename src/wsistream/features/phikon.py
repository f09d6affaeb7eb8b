"""Phikon and Phikon-v2: Hugging Face vision models loaded from a local folder, CLS-token features.

Sources: the ``owkin/phikon`` model card (``ViTModel.from_pretrained(..., add_pooling_layer=False)``,
feature ``last_hidden_state[:, 0, :]``, 768-d) and the ``owkin/phikon-v2`` model card
(``AutoModel`` = ``Dinov2Model``, CLS of ``last_hidden_state``, 1024-d). Registered by name in
:data:`wsistream.registry.ENCODERS`.
"""

from __future__ import annotations

import os

from wsistream.features.encoders import Encoder, hf_encoder, load_hf_model


def phikon(weights: str | os.PathLike[str]) -> Encoder:
    """Phikon (iBOT ViT-B/16 pan-cancer): Hugging Face ``ViTModel`` without pooler, CLS feature (768-d)."""
    from transformers import ViTModel

    model = load_hf_model(weights, ViTModel, "vit", add_pooling_layer=False)
    return hf_encoder("phikon", model, weights)


def phikon_v2(weights: str | os.PathLike[str]) -> Encoder:
    """Phikon-v2 (DINOv2 ViT-L/16): Hugging Face ``Dinov2Model``, CLS feature (1024-d)."""
    from transformers import Dinov2Model

    model = load_hf_model(weights, Dinov2Model, "dinov2")
    return hf_encoder("phikon-v2", model, weights)
