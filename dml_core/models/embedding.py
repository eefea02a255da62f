"""Trunk + linear head + L2 normalisation: the module every trunk is wrapped in."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EmbeddingModel"]


def _batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class EmbeddingModel(nn.Module):
    """`forward(images (B, C, H, W)) -> (B, embedding_dim)` L2-normalised embeddings.

    With `freeze_batchnorm`, every BatchNorm of the trunk keeps its running statistics (eval mode, even after
    `model.train()`) and its affine parameters (`requires_grad=False`), as in the reality check's protocol for
    fine-tuning a pretrained trunk with small batches.
    """

    def __init__(self, trunk: nn.Module, trunk_features: int, embedding_dim: int, *,
                 freeze_batchnorm: bool = False) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim=}")
        self.trunk = trunk
        self.head = nn.Linear(trunk_features, embedding_dim)
        self.embedding_dim = embedding_dim
        self.freeze_batchnorm = freeze_batchnorm
        if freeze_batchnorm:
            for bn in _batchnorms(self.trunk):
                for p in bn.parameters():
                    p.requires_grad_(False)
            self.train(self.training)

    def train(self, mode: bool = True) -> EmbeddingModel:
        super().train(mode)
        if self.freeze_batchnorm:
            for bn in _batchnorms(self.trunk):
                bn.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk(images)
        if not isinstance(features, torch.Tensor):  # Inception / GoogLeNet return (logits, aux...) when training
            features = _first_tensor(features)
        return F.normalize(self.head(features.flatten(1)), dim=1)  # (B, D)


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"trunk returned {type(output).__name__}, expected a tensor or a tuple starting with one")
