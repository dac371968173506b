"""Wide residual networks (Zagoruyko & Komodakis, 2016) as used throughout the paper.

Pre-activation WRN-d-k for CIFAR-sized inputs: a 3x3 stem with 16 channels, three groups of
n = (d - 4) / 6 basic blocks with widths 16k, 32k, 64k and strides 1, 2, 2, a final BN-ReLU,
global average pooling and a linear classifier.  Parameter counts with 10 classes:
WRN-40-2 = 2,243,546 and WRN-16-2 = 691,674 (checked in the tests).

Inputs are images in [0, 1]; the per-dataset normalisation is a fixed buffer inside the model, so
attacks and input noise work in pixel space and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .noise import dropout_keep
from .settings import WRNSpec


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
    would).  By default each forward draws its own mask in one fused bernoulli_ call.  In a network
    armed with `WideResNet.draw_dropout_ahead`, the layer reads `keep` instead, its part of one mask
    buffer that `WideResNet.draw_dropout` fills for the whole network before the forward: the forward
    then holds no random op, so torch.compile traces it whole (a generator argument breaks its graph).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p = p
        self.generator: torch.Generator | None = None
        self.register_buffer("keep", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.keep is None:
            keep = dropout_keep(torch.empty_like(x), self.p, self.generator)
        else:
            keep = self.keep[: x.shape[0]]  # drawn for the full batch; a last, smaller batch uses a prefix
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


class WideResNet(nn.Module):
    def __init__(self, spec: WRNSpec):
        super().__init__()
        if spec.depth < 10 or (spec.depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {spec.depth}")
        if spec.width < 1:
            raise ValueError(f"WRN width must be >= 1, got {spec.width}")
        if len(spec.mean) != spec.in_channels or len(spec.std) != spec.in_channels:
            raise ValueError(f"mean and std need one value per input channel ({spec.in_channels}), "
                             f"got {len(spec.mean)} and {len(spec.std)}")
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

    def draw_dropout_ahead(self, batch_size: int, image_size: tuple[int, int], generator: torch.Generator,
                           channels_last: bool = False) -> None:
        """Arm the dropout layers to read masks drawn ahead of each forward by `draw_dropout`, from
        `generator`, for batches of up to `batch_size` images of `image_size` (height, width).  One
        bool buffer on the model's device holds every layer's mask (in the activations' memory
        format), so a step draws all of them in a single call.  Arm after moving the model; undo with
        `stop_drawing_dropout_ahead`."""
        layers, shapes = [], []
        for block in self.modules():  # in forward order
            if isinstance(block, BasicBlock):
                conv = block.conv1  # the dropout sees conv1's output, through bn2 and its ReLU
                image_size = tuple((size + 2 * pad - kernel) // stride + 1 for size, pad, kernel, stride
                                   in zip(image_size, conv.padding, conv.kernel_size, conv.stride))
                if block.dropout.p > 0:
                    layers.append(block.dropout)
                    shapes.append((batch_size, conv.out_channels, *image_size))
        if not layers:
            return
        flat = torch.empty(sum(math.prod(s) for s in shapes), dtype=torch.bool, device=self.stem.weight.device)
        self.register_buffer("dropout_keep", flat, persistent=False)
        offset = 0
        for layer, (b, c, h, w) in zip(layers, shapes):
            view = flat[offset : offset + b * c * h * w]
            layer.keep = view.view(b, h, w, c).permute(0, 3, 1, 2) if channels_last else view.view(b, c, h, w)
            offset += b * c * h * w
        self.dropout_generator, self.dropout_p = generator, layers[0].p

    def stop_drawing_dropout_ahead(self) -> None:
        for layer in self.dropout_modules():
            layer.keep = None
        self.dropout_keep = None

    def draw_dropout(self) -> None:
        """Draw the masks of the next forward, all in one call; nothing unless armed and training."""
        keep = getattr(self, "dropout_keep", None)
        if keep is not None and any(layer.training for layer in self.dropout_modules()):
            dropout_keep(keep, self.dropout_p, self.dropout_generator)

    def train(self, mode: bool = True) -> "WideResNet":
        if mode and getattr(self, "inference_only", False):
            raise RuntimeError(f"this {self.spec.name} has its BatchNorm folded for inference and cannot be trained")
        return super().train(mode)


@contextlib.contextmanager
def dropout_drawn_ahead(nets: Sequence[WideResNet], batch_size: int, image_size: tuple[int, int],
                        generator: torch.Generator, channels_last: bool = False) -> Iterator[None]:
    """Within the block, `nets` draw their dropout masks ahead of each forward (`draw_dropout`)."""
    for net in nets:
        net.draw_dropout_ahead(batch_size, image_size, generator, channels_last)
    try:
        yield
    finally:
        for net in nets:
            net.stop_drawing_dropout_ahead()


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


# Module initialisation draws from the global CPU generator; seeds trained side by side in threads
# build their models at the same time, so seeding and drawing must not interleave.
_INIT_LOCK = threading.Lock()


def build_model(spec: WRNSpec, seed: int) -> WideResNet:
    """Initialise on the CPU from `seed` without touching the caller's global RNG state."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WideResNet(spec)
