"""The counting model: a torchvision backbone (its classifier removed) and a new MLP head.

A saved model file holds the weights plus everything needed to rebuild and use it: arch, head,
classes, the loss (how the head's outputs decode to a count) and the preprocessing contract
(image size, resize, JPEG draft decode, mean/std, test-time augmentation), so evaluate, predict
and serve need nothing but the file and treat every image alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from binsight.data.image_datasets import IMAGENET_MEAN, IMAGENET_STD
from binsight.errors import ConfigError, DataError, require_model_file
from binsight.files import atomic_path
from binsight.model.count_losses import output_size
from binsight.params import ModelParams, check_model

MODEL_FORMAT = 1
RESIZE = "bilinear, to a square (aspect ratio not kept: nothing is cropped away)"


class BinCounter(nn.Module):
    def __init__(
        self, backbone, feature_dim, num_classes, hidden=(), dropout=0.0, freeze_backbone=False, aux_outputs=0
    ):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.freeze_backbone = freeze_backbone
        layers, width = [], feature_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        if not hidden and dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)
        # Training only (train.aux_weight): a second head for the metadata targets (binsight.model.aux_targets),
        # its outputs after the head's. save_model leaves it out.
        self.aux = nn.Linear(feature_dim, aux_outputs) if aux_outputs else None
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def forward(self, x):
        features = self.backbone(x)
        out = self.head(features)
        return out if self.aux is None else torch.cat([out, self.aux(features)], 1)

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_backbone:
            # A frozen backbone also keeps its batch-norm statistics: its features never change,
            # which is what lets `featurize` cache them.
            self.backbone.eval()
        return self


def _strip_classifier(net):
    """Replace the network's last Linear layer with Identity; return its input width."""
    last = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ConfigError(f"{type(net).__name__} has no linear classifier to replace")
    parent_name, _, child = last.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    width = getattr(parent, child).in_features
    setattr(parent, child, nn.Identity())
    return width


def resolve_weights(arch, weights):
    """'imagenet' -> torchvision's best ImageNet weights for `arch`; 'none' -> None; else an enum name."""
    if weights.lower() == "none":
        return None
    enum = torchvision.models.get_model_weights(arch)
    if weights.lower() == "imagenet":
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise ConfigError(
            f"model.weights={weights!r} is not allowed for {arch}: expected imagenet, none, {names}"
        ) from None


def pretrained_state_dict(weights):
    """torchvision's weights from the torch hub cache, downloading them when missing. Offline and
    not cached: one line that says where to put the file."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
        url = weights.url
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        reason = str(getattr(exc, "reason", exc)).splitlines()[0]
        raise DataError(
            f"pretrained weights {weights} are not at {target} and cannot be downloaded ({reason}): "
            f"download {url} there (TORCH_HOME moves the cache), or set model.weights: none"
        ) from None


# The archs model.width applies to (binsight.params.SCALABLE_ARCHS names the same ones without importing torch).
RESNET_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def scaled_resnet(arch, width):
    """torchvision's ResNet `arch` with every layer's channel count times `width` (0.5: half the
    channels, about a quarter of the compute), initialised the way torchvision initialises a ResNet.
    For training from scratch: no pretrained weights fit it."""
    block, depths = RESNET_LAYOUTS[arch]
    base = max(8, round(64 * width))
    with torch.device("meta"):  # every layer with weights is replaced below: never allocate the full width
        net = torchvision.models.ResNet(block, list(depths))
    net.conv1, net.bn1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False), nn.BatchNorm2d(base)
    inplanes = base
    for i, depth in enumerate(depths):
        planes, stride = base * 2**i, 1 if i == 0 else 2
        out = planes * block.expansion
        down = (
            None
            if stride == 1 and inplanes == out
            else nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
        )
        layers = [block(inplanes, planes, stride, down)] + [block(out, planes) for _ in range(depth - 1)]
        setattr(net, f"layer{i + 1}", nn.Sequential(*layers))
        inplanes = out
    net.fc = nn.Linear(inplanes, 1000)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return net


def build_model(
    arch: str,
    weights: str,
    num_classes: int,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    freeze_backbone: bool = False,
    pretrained: bool = True,
    width: float = 1.0,
    aux_outputs: int = 0,
) -> BinCounter:
    """A BinCounter with `num_classes` outputs. `pretrained=False` skips loading weights (for
    rebuilding a saved model). `width` != 1: a narrower or wider ResNet (scaled_resnet), from scratch."""
    resolved = resolve_weights(arch, weights)
    try:
        net = torchvision.models.get_model(arch, weights=None) if width == 1 else scaled_resnet(arch, width)
    except (ValueError, KeyError):
        raise ConfigError(
            f"model.arch={arch!r} is not a torchvision model"
            + (" with a width (resnet18/34/50/101 only)" if width != 1 else "")
        ) from None
    if resolved is not None and width != 1:
        raise ConfigError(f"model.width={width:g} needs model.weights: none (pretrained weights fit width 1 only)")
    if resolved is not None and pretrained:
        net.load_state_dict(pretrained_state_dict(resolved))
    feature_dim = _strip_classifier(net)
    return BinCounter(net, feature_dim, num_classes, hidden, dropout, freeze_backbone, aux_outputs)


def model_from_params(
    model_params: ModelParams, num_classes: int, pretrained: bool = True, loss: str = "ce", aux_outputs: int = 0
) -> BinCounter:
    """The model for `num_classes` counts, its head as wide as `loss` needs (binsight.model.count_losses)."""
    return build_model(
        model_params.arch,
        model_params.weights,
        output_size(loss, num_classes),
        model_params.head.hidden,
        model_params.head.dropout,
        model_params.freeze_backbone,
        pretrained,
        model_params.width,
        aux_outputs,
    )


def preprocessing(image_size: int, jpeg_draft: bool = True, tta: str = "none") -> dict[str, Any]:
    """The preprocessing contract stored in a model file and honoured by evaluate, predict, serve."""
    return {
        "image_size": int(image_size),
        "resize": RESIZE,
        "jpeg_draft": bool(jpeg_draft),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "tta": tta,
    }


def save_model(
    path: str | Path,
    model: BinCounter,
    classes: list[int],
    model_params: ModelParams,
    image_size: int,
    extra: dict | None = None,
    loss: str = "ce",
    preprocess: dict | None = None,
) -> None:
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("aux.")}  # training-only head
    payload = {
        "format": MODEL_FORMAT,
        "state_dict": state,
        "classes": list(classes),
        "model": model_params.as_dict(),
        "image_size": image_size,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "loss": loss,
        "preprocess": preprocess or preprocessing(image_size),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[BinCounter, dict]:
    """Rebuild a saved model -> (model in eval mode on `device`, the saved dict without weights)."""
    path = Path(path)
    require_model_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DataError(f"{path} is not a binsight model file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DataError(f"{path} is not a binsight model file (format {MODEL_FORMAT})")
    payload.setdefault("loss", "ce")  # files written before the loss was a choice
    payload.setdefault("preprocess", preprocessing(payload["image_size"]))
    # the file's model section, checked and completed as params.yaml's would be
    model_params = check_model(payload["model"])
    model = model_from_params(model_params, len(payload["classes"]), pretrained=False, loss=payload["loss"])
    model.load_state_dict(payload.pop("state_dict"))
    return model.to(device).eval(), payload


def copy_model_file(src: str | Path, dst: str | Path, **entries: Any) -> None:
    """Write `src`'s model file to `dst` with `entries` added or replaced (evaluate's calibration)."""
    payload = torch.load(src, map_location="cpu", weights_only=False)
    payload.update(entries)
    with atomic_path(dst) as tmp:
        torch.save(payload, tmp)
