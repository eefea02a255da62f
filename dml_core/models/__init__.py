"""Embedding models: a trunk, a linear head to `embedding_dim`, and L2 normalisation.

`make_model(trunk, *, embedding_dim, pretrained_weights=None, freeze_batchnorm=False, in_channels=3)`:
- `small_cnn`: `SmallCNN`, for the 32 px glyphs dataset on a CPU;
- any torchvision classification model by name (`resnet18`, `resnet50`, ...), built with `weights=None`; its last
  `nn.Linear` is replaced by the head.

`pretrained_weights` is a local file holding the trunk's state dict (for torchvision trunks, the state dict of the
whole torchvision model, classifier head optional); it is read with `torch.load(..., weights_only=True)`, and
nothing is ever downloaded. `in_channels != 3` adapts a torchvision trunk's first convolution (mean of the RGB
filters). Unknown trunk names raise ValueError listing the valid ones (`TRUNKS`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dml_core.models.embedding import EmbeddingModel
from dml_core.models.small_cnn import SmallCNN
from dml_core.models.torchvision_trunk import TORCHVISION_TRUNKS, load_state_dict_file, torchvision_trunk

__all__ = ["TRUNKS", "EmbeddingModel", "SmallCNN", "make_model"]

TRUNKS: tuple[str, ...] = ("small_cnn", *TORCHVISION_TRUNKS)


def _small_cnn(pretrained_weights: str | Path | None, in_channels: int) -> tuple[nn.Module, int]:
    trunk = SmallCNN(in_channels=in_channels)
    if pretrained_weights is not None:
        try:
            trunk.load_state_dict(load_state_dict_file(pretrained_weights))
        except RuntimeError as exc:  # missing, unexpected or mis-shaped keys: torch's message is many lines
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"pretrained weights file {pretrained_weights} does not match small_cnn: {first}") \
                from None
    return trunk, trunk.out_features


def make_model(trunk: str, *, embedding_dim: int, pretrained_weights: str | Path | None = None,
               freeze_batchnorm: bool = False, in_channels: int = 3) -> EmbeddingModel:
    """A module mapping (B, in_channels, H, W) images to L2-normalised (B, embedding_dim) embeddings."""
    if trunk not in TRUNKS:
        raise ValueError(f"unknown trunk {trunk!r}; expected small_cnn or a torchvision classification model: "
                         f"{', '.join(TRUNKS)}")
    for name, value in (("embedding_dim", embedding_dim), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"make_model needs a positive integer {name}, got {name}={value!r}")
    if trunk == "small_cnn":
        body, features = _small_cnn(pretrained_weights, in_channels)
    else:
        body, features = torchvision_trunk(trunk, pretrained_weights=pretrained_weights, in_channels=in_channels)
    return EmbeddingModel(body, features, embedding_dim, freeze_batchnorm=freeze_batchnorm)
