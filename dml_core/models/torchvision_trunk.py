"""Any torchvision classification model as a trunk: built without weights, optionally loaded from a local file,
its classifier's last linear layer removed, its first convolution adapted to the input's channel count."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

__all__ = ["TORCHVISION_TRUNKS", "torchvision_trunk", "load_state_dict_file"]

# Classification models only (detection, segmentation and video models live in submodules with other outputs).
TORCHVISION_TRUNKS: tuple[str, ...] = tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def load_state_dict_file(path: str | Path) -> Mapping[str, torch.Tensor]:
    """A state dict from a local file, tensors only (`weights_only=True`); never downloads anything."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path} (expected a local state-dict file "
                                f"saved with torch.save; weights are never downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ... here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"pretrained weights file {path} cannot be read as a tensors-only state dict "
                         f"(torch.load with weights_only=True): {reason}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights file {path} does not hold a state dict (a mapping of names to "
                         f"tensors), got {type(state).__name__}")
    return state


def _last_linear(model: nn.Module, name: str) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"torchvision model {name!r} has no final nn.Linear classifier to replace")
    return linears[-1]


def _set_submodule(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _load_trunk_weights(model: nn.Module, path: str | Path, head: str) -> None:
    """Load a state dict of the full torchvision model; its classifier head may be absent or of any size."""
    state = {k: v for k, v in load_state_dict_file(path).items() if not k.startswith(head + ".")}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(head + ".")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"pretrained weights file {path} does not match the trunk: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    model.load_state_dict(state, strict=False)


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first 3-channel convolution by one taking `in_channels`.

    Its filters are the mean of the RGB filters, scaled by 3 / in_channels: a grey image then produces the same
    activations as its RGB copy would have, so pretrained features survive the change.
    """
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3),
                 None)
    if found is None:
        raise ValueError("cannot adapt the input channels: the model has no 3-channel nn.Conv2d")
    name, conv = found
    if conv.groups != 1:
        raise ValueError(f"cannot adapt the input channels of grouped convolution {name!r} ({conv.groups=})")
    # skip_init: the weights are overwritten below, so drawing random ones would only shift the global RNG.
    new = nn.utils.skip_init(nn.Conv2d, in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                             padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                             padding_mode=conv.padding_mode)
    with torch.no_grad():
        weight = conv.weight.mean(dim=1, keepdim=True) * (3.0 / in_channels)  # (O, 1, k, k)
        new.weight.copy_(weight.expand(-1, in_channels, -1, -1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)  # type: ignore[union-attr]
    _set_submodule(model, name, new)


def torchvision_trunk(name: str, *, pretrained_weights: str | Path | None,
                      in_channels: int) -> tuple[nn.Module, int]:
    """(trunk mapping images to features (B, F), F)."""
    model = torchvision.models.get_model(name, weights=None)
    head, linear = _last_linear(model, name)
    if pretrained_weights is not None:
        _load_trunk_weights(model, pretrained_weights, head)
    _set_submodule(model, head, nn.Identity())
    if in_channels != 3:
        adapt_first_conv(model, in_channels)
    return model, linear.in_features
