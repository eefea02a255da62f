"""Trunks: shapes, normalisation, frozen BatchNorm, weights from a local file, channel adaptation, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from dml_core.models import TRUNKS, EmbeddingModel, SmallCNN, make_model


def _images(batch: int, channels: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("trunk", "channels"), [("small_cnn", 1), ("small_cnn", 3), ("resnet18", 3),
                                                  ("resnet18", 1), ("mobilenet_v3_small", 3)])
def test_embeddings_are_unit_vectors_of_the_requested_size(trunk: str, channels: int) -> None:
    torch.manual_seed(0)
    model = make_model(trunk, embedding_dim=24, in_channels=channels)
    for mode in (model.train, model.eval):
        mode()
        out = model(_images(3, channels))
        assert out.shape == (3, 24) and out.dtype == torch.float32
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_gradients_reach_the_first_layer() -> None:
    model = make_model("small_cnn", embedding_dim=8, in_channels=1)
    model(_images(4, 1)).pow(3).sum().backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_small_cnn_features() -> None:
    trunk = SmallCNN(in_channels=2, width=4)
    assert trunk(_images(2, 2)).shape == (2, trunk.out_features) == (2, 64)
    assert trunk(_images(2, 2, size=20)).shape == (2, 64)  # global pooling: any size >= 8
    with pytest.raises(ValueError, match="in_channels"):
        SmallCNN(in_channels=0)


@pytest.mark.parametrize("trunk", ["small_cnn", "resnet18"])
def test_frozen_batchnorm_stays_frozen_through_a_training_step(trunk: str) -> None:
    torch.manual_seed(0)
    model = make_model(trunk, embedding_dim=8, freeze_batchnorm=True, in_channels=3)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not p.requires_grad for m in norms for p in m.parameters())
    model.eval()
    model.train()  # a trainer calls train() every epoch: BN must stay in eval mode
    assert model.training and not any(m.training for m in norms)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(_images(6, 3)).pow(3).sum()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    bn_keys = {k for k in before for name, m in model.named_modules() if m in norms and k.startswith(name + ".")}
    assert bn_keys and all(torch.equal(before[k], after[k]) for k in bn_keys)  # stats and affine unchanged
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in bn_keys)  # the rest learned


def test_batchnorm_trains_normally_without_freezing() -> None:
    model = make_model("small_cnn", embedding_dim=8, in_channels=1)
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(_images(4, 1))
    assert bn.training and not torch.equal(before, bn.running_mean)


def _torchvision_weights(path: Path, name: str = "resnet18", num_classes: int = 1000) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    state = torchvision.models.get_model(name, weights=None, num_classes=num_classes).state_dict()
    torch.save(state, path)
    return state


def test_weights_from_a_local_file_are_loaded_and_change_the_output(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    state = _torchvision_weights(path, num_classes=10)  # any head size: the head is replaced anyway
    torch.manual_seed(0)
    plain = make_model("resnet18", embedding_dim=16).eval()
    torch.manual_seed(0)
    loaded = make_model("resnet18", embedding_dim=16, pretrained_weights=path).eval()
    trunk = loaded.trunk.state_dict()
    assert all(torch.equal(trunk[k], v) for k, v in state.items() if not k.startswith("fc."))
    torch.testing.assert_close(loaded.head.weight, plain.head.weight)  # same seed: only the trunk differs
    images = _images(2, 3, size=64)
    assert not torch.allclose(plain(images), loaded(images))


def test_small_cnn_weights_from_a_file(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = SmallCNN(in_channels=1)
    torch.save(source.state_dict(), tmp_path / "small.pt")
    model = make_model("small_cnn", embedding_dim=4, in_channels=1, pretrained_weights=tmp_path / "small.pt")
    assert all(torch.equal(model.trunk.state_dict()[k], v) for k, v in source.state_dict().items())


def test_grey_input_matches_its_rgb_copy(tmp_path: Path) -> None:
    """in_channels=1 averages the pretrained RGB filters (times 3): a grey image embeds like its RGB copy."""
    path = tmp_path / "resnet18.pth"
    _torchvision_weights(path)
    torch.manual_seed(0)
    rgb = make_model("resnet18", embedding_dim=16, pretrained_weights=path).eval()
    torch.manual_seed(0)
    grey = make_model("resnet18", embedding_dim=16, pretrained_weights=path, in_channels=1).eval()
    grey.head.load_state_dict(rgb.head.state_dict())
    assert grey.trunk.conv1.in_channels == 1
    images = _images(2, 1, size=64)
    torch.testing.assert_close(grey(images), rgb(images.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-4)


def test_bad_weight_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=f"not found: {missing}.*never downloaded"):
        make_model("resnet18", embedding_dim=8, pretrained_weights=missing)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        make_model("resnet18", embedding_dim=8, pretrained_weights=tmp_path / "list.pth")
    state = _torchvision_weights(tmp_path / "r.pth")
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing.*layer1.0.conv1.weight"):
        make_model("resnet18", embedding_dim=8, pretrained_weights=tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"wrong shape.*layer1.0.conv1.weight \(64, 64, 3, 3\) vs \(64, 64, 1, 1\)"):
        make_model("resnet50", embedding_dim=8, pretrained_weights=tmp_path / "r.pth")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected \['extra.weight'\]"):
        make_model("resnet18", embedding_dim=8, pretrained_weights=tmp_path / "extra.pth")


class _NotATensor:
    pass


def test_unsafe_or_mismatched_weight_files_give_one_line_errors(tmp_path: Path) -> None:
    # A pickled object that weights_only=True refuses to load: one line naming the file, no unpickling.
    torch.save({"conv.weight": _NotATensor()}, tmp_path / "object.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    for bad in ("object.pth", "garbage.pth"):
        with pytest.raises(ValueError, match=f"{bad} cannot be read as a tensors-only state dict") as info:
            make_model("resnet18", embedding_dim=8, pretrained_weights=tmp_path / bad)
        assert "\n" not in str(info.value)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth does not match small_cnn") as info:
        make_model("small_cnn", embedding_dim=8, pretrained_weights=tmp_path / "other.pth", in_channels=1)
    assert "\n" not in str(info.value)


def test_unknown_trunk_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="unknown trunk 'resnet19'.*small_cnn.*resnet18.*resnet50"):
        make_model("resnet19", embedding_dim=8)
    for bad in ({"embedding_dim": 0}, {"embedding_dim": 2.0}, {"embedding_dim": 8, "in_channels": 0}):
        field = "in_channels" if "in_channels" in bad else "embedding_dim"
        with pytest.raises(ValueError, match=f"{field}="):
            make_model("small_cnn", **bad)  # type: ignore[arg-type]


def test_trunks_without_a_linear_classifier_are_refused() -> None:
    assert "squeezenet1_0" in TRUNKS
    with pytest.raises(ValueError, match="squeezenet1_0.*no final nn.Linear"):
        make_model("squeezenet1_0", embedding_dim=8)


def test_tuple_outputs_of_auxiliary_heads_are_unwrapped() -> None:
    class TwoHeads(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.mean(dim=(2, 3)), torch.zeros(1)

    model = EmbeddingModel(TwoHeads(), 3, 5)
    assert model(_images(2, 3)).shape == (2, 5)


def test_trunk_list_has_the_named_models() -> None:
    assert TRUNKS[0] == "small_cnn" and {"resnet18", "resnet50", "vit_b_16"} <= set(TRUNKS)
    assert not any(name.startswith(("fasterrcnn", "deeplab", "r3d")) for name in TRUNKS)  # classification only
