"""Wide residual networks (Zagoruyko & Komodakis, 2016) as used throughout the paper.

Pre-activation WRN-d-k for CIFAR-sized inputs: a 3x3 stem with 16 channels, three groups of
n = (d - 4) / 6 basic blocks with widths 16k, 32k, 64k and strides 1, 2, 2, a final BN-ReLU,
global average pooling and a linear classifier.  Parameter counts with 10 classes:
WRN-40-2 = 2,243,546 and WRN-16-2 = 691,674 (checked in the tests).

Inputs are images in [0, 1]; the per-dataset normalisation is a fixed buffer inside the model, so
attacks and input noise work in pixel space and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Features(NamedTuple):
    """Intermediate representations that distillation losses consume.

    groups: the three group outputs (attention transfer);
    last: the last group's output before the final BN-ReLU (similarity preserving);
    embedding: the pooled vector fed to the classifier (RKD, feature mimicry).
    """

    groups: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    last: torch.Tensor
    embedding: torch.Tensor


class SeededDropout(nn.Module):
    """Dropout whose mask comes from an explicit generator, so a run can seed and checkpoint it.

    `generator` is assigned by the trainer; without one the global generator is used (as nn.Dropout
    would).  The mask is drawn in one fused bernoulli_ call, no Python work per element.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3 -> BN-ReLU-[dropout]-conv3x3, plus the (projected) shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.dropout = SeededDropout(dropout)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.shortcut = (
            None
            if in_planes == out_planes and stride == 1
            else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        # The projection sees the BN-ReLU'd input, as in the reference WRN code.
        return out + (x if self.shortcut is None else self.shortcut(pre))


@dataclass(frozen=True)
class WRNSpec:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    depth: int
    width: int
    num_classes: int = 10
    dropout: float = 0.0
    in_channels: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def name(self) -> str:
        return f"WRN-{self.depth}-{self.width}"

    def same_architecture(self, other: "WRNSpec") -> bool:
        """Dropout is a training-time choice, not part of the weights' shape."""
        a, b = asdict(self), asdict(other)
        a.pop("dropout"), b.pop("dropout")
        return a == b


class WideResNet(nn.Module):
    def __init__(self, spec: WRNSpec):
        super().__init__()
        if spec.depth < 10 or (spec.depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {spec.depth}")
        if spec.width < 1:
            raise ValueError(f"WRN width must be >= 1, got {spec.width}")
        if len(spec.mean) != spec.in_channels or len(spec.std) != spec.in_channels:
            raise ValueError("mean and std need one value per input channel")
        self.spec = spec
        n = (spec.depth - 4) // 6
        widths = [16, 16 * spec.width, 32 * spec.width, 64 * spec.width]
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)
        self.stem = nn.Conv2d(spec.in_channels, widths[0], 3, 1, 1, bias=False)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = [
                BasicBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1, spec.dropout)
                for i in range(n)
            ]
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.ModuleList(groups)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], spec.num_classes)
        self.embedding_dim = widths[3]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits for images in [0, 1]; with features=True, (logits, Features)."""
        out = self.stem((x - self.mean) / self.std)
        group_outputs = []
        for group in self.groups:
            out = group(out)
            group_outputs.append(out)
        # Global average pooling as a mean: same value, and a deterministic backward on CUDA.
        embedding = F.relu(self.bn(out)).mean((2, 3))
        logits = self.fc(embedding)
        if not features:
            return logits
        return logits, Features(tuple(group_outputs), out, embedding)

    def dropout_modules(self) -> list[SeededDropout]:
        return [m for m in self.modules() if isinstance(m, SeededDropout)]

    def train(self, mode: bool = True) -> "WideResNet":
        if mode and getattr(self, "inference_only", False):
            raise RuntimeError(f"this {self.spec.name} has its BatchNorm folded for inference and cannot be trained")
        return super().train(mode)


@torch.no_grad()
def fold_batchnorm(model: WideResNet) -> WideResNet:
    """An inference copy of `model` with each block's second BatchNorm folded into the convolution
    before it: in eval mode, conv -> BN is one convolution with per-channel scaled weights and a bias.

    Same function up to float rounding, one elementwise pass fewer per block (forward and, in
    attacks, backward).  The copy is in eval mode and refuses to be put in training mode; dropout
    modules can still be switched on (Fickle Teacher: dropout follows the folded BN and its ReLU).
    """
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, BasicBlock) and isinstance(block.bn2, nn.BatchNorm2d):
            conv, bn = block.conv1, block.bn2
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
            fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            fused.bias.copy_(bn.bias - bn.running_mean * scale)
            if conv.weight.is_contiguous(memory_format=torch.channels_last):
                fused = fused.to(memory_format=torch.channels_last)
            fused.requires_grad_(conv.weight.requires_grad)
            block.conv1, block.bn2 = fused, nn.Identity()
    folded.inference_only = True
    return folded


def wide_resnet(
    depth: int,
    width: int,
    num_classes: int = 10,
    dropout: float = 0.0,
    in_channels: int = 3,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> WideResNet:
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    return WideResNet(WRNSpec(depth, width, num_classes, float(dropout), in_channels, mean, std))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
