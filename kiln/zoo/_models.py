"""The zoo's network definitions, in plain torch.

Every builder here is deterministic: it creates the module under a fixed seed in a forked
RNG state (the caller's global RNG is left untouched), gives every norm layer non-trivial
parameters (so that fusions such as Conv+BatchNorm have real work to do), and returns the
module in eval mode.

The CNNs' BatchNorm running statistics are calibrated on one seeded batch of random
images, as a trained network's would be on its data. Without this, random depthwise
convolutions shrink the activations layer by layer until MobileNetV2's logits no longer
depend on its input.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

# --------------------------------------------------------------------------------------
# Determinism helpers
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU RNG seeded to ``seed``, restoring the old state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def randomize_norms(module: nn.Module) -> None:
    """Give BatchNorm and LayerNorm layers seeded, non-identity affine parameters.

    Freshly constructed norms are identities in eval mode (gamma=1, beta=0, mean=0, var=1),
    which would let a broken Conv+BatchNorm fusion pass unnoticed. The values stay close
    to the identity so activations keep a sensible scale. Uses the global RNG, so call it
    inside :func:`seeded`.
    """
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d | nn.LayerNorm):
            layer.weight.uniform_(0.8, 1.2)
            layer.bias.normal_(0.0, 0.1)


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, batch: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to its batch statistics on ``batch``.

    One forward pass in train mode with a cumulative average (momentum None); the module
    is left in eval mode, where it then normalizes ``batch`` as training mode did.
    """
    norms = [layer for layer in module.modules() if isinstance(layer, nn.BatchNorm2d)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None
    module.train()
    module(batch)
    module.eval()
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def _calibration_images() -> torch.Tensor:
    """Four random RGB images (uses the global RNG: call inside :func:`seeded`).

    112x112 rather than the models' 224x224 keeps the build fast; the networks are fully
    convolutional up to the global pooling, and noise has the same statistics at any size.
    """
    return torch.randn(4, 3, 112, 112)


def kaiming_convs(module: nn.Module) -> None:
    """Initialise convolutions as torchvision does (He normal, fan-out, zero bias)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


# --------------------------------------------------------------------------------------
# ResNet-18
# --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 Conv-BN layers with an identity (or 1x1 Conv-BN projection) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlocks [2, 2, 2, 2]) for [N, 3, 224, 224] images, 1000 logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        in_channels = 64
        for channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels, 1)
                )
            )
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet18() -> ResNet18:
    """ResNet-18 with seeded weights, in eval mode."""
    with seeded(18):
        model = ResNet18()
        kaiming_convs(model)
        randomize_norms(model)
        calibrate_batchnorm(model, _calibration_images())
    return model.eval()


# --------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, 1, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expand ratio t, output channels c, repeats n, first stride s), as in the paper.
_MOBILENETV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) for [N, 3, 224, 224] images, 1000 logits; no dropout."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        in_ch = 32
        for t, c, n, s in _MOBILENETV2_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        layers.append(_conv_bn_relu6(in_ch, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build_mobilenetv2() -> MobileNetV2:
    """MobileNetV2 with seeded weights, in eval mode."""
    with seeded(2):
        model = MobileNetV2()
        kaiming_convs(model)
        randomize_norms(model)
        calibrate_batchnorm(model, _calibration_images())
    return model.eval()


# --------------------------------------------------------------------------------------
# BERT-style encoder
# --------------------------------------------------------------------------------------

BERT_VOCAB = 30522
BERT_SEQ = 128
BERT_D_MODEL = 256
BERT_HEADS = 4
BERT_FFN = 1024
BERT_LAYERS = 4
BERT_MASK_BIAS = -10000.0  # added to attention scores of padded keys, as in the original BERT


class SelfAttention(nn.Module):
    """Multi-head self-attention written out op by op.

    ``softmax(Q @ K^T * scale + mask_bias) @ V`` with explicit MatMul, Mul, Add and Softmax,
    so that attention-fusion passes have the textbook pattern to match.
    """

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + mask_bias
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seq, d_model)
        return self.out(context)


class EncoderLayer(nn.Module):
    """Post-LayerNorm transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, d_model: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attention = SelfAttention(d_model, heads)
        self.attention_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn_in = nn.Linear(d_model, ffn)
        self.gelu = nn.GELU(approximate="none")  # exact, erf-based GELU
        self.ffn_out = nn.Linear(ffn, d_model)
        self.ffn_norm = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, mask_bias))
        return self.ffn_norm(x + self.ffn_out(self.gelu(self.ffn_in(x))))


class BertEncoder(nn.Module):
    """A small BERT: token + position embeddings, post-LN encoder layers, tanh pooler.

    Inputs: ``input_ids`` int64 [N, S] and ``attention_mask`` int64 [N, S] with 1 for a
    real token and 0 for padding (the Hugging Face convention), S <= 128.
    Outputs: ``last_hidden_state`` float32 [N, S, 256] and ``pooler_output`` float32
    [N, 256] (tanh(Linear(hidden state of token 0))).
    """

    def __init__(
        self,
        vocab_size: int = BERT_VOCAB,
        max_positions: int = BERT_SEQ,
        d_model: int = BERT_D_MODEL,
        heads: int = BERT_HEADS,
        ffn: int = BERT_FFN,
        layers: int = BERT_LAYERS,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_positions, d_model)
        self.embedding_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, ffn) for _ in range(layers))
        self.pooler = nn.Linear(d_model, d_model)
        self.register_buffer("position_ids", torch.arange(max_positions), persistent=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq = input_ids.shape[1]
        positions = self.position_embedding(self.position_ids[:seq])
        x = self.embedding_norm(self.token_embedding(input_ids) + positions)
        # [N, S] in {0, 1} -> additive bias [N, 1, 1, S] broadcast over heads and queries.
        keep = attention_mask[:, None, None, :].to(x.dtype)
        mask_bias = (1.0 - keep) * BERT_MASK_BIAS
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


@torch.no_grad()
def _bert_init(model: BertEncoder) -> None:
    """BERT's initialiser: N(0, 0.02) weights and embeddings, small random biases."""
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            layer.weight.normal_(0.0, 0.02)
            layer.bias.normal_(0.0, 0.02)
        elif isinstance(layer, nn.Embedding):
            layer.weight.normal_(0.0, 0.02)


def build_bert() -> BertEncoder:
    """The BERT-style encoder with seeded weights, in eval mode."""
    with seeded(128):
        model = BertEncoder()
        _bert_init(model)
        randomize_norms(model)
    return model.eval()


# --------------------------------------------------------------------------------------
# MLP and LSTM
# --------------------------------------------------------------------------------------


class MLP(nn.Module):
    """784-512-512-10 perceptron with ReLU, for flattened 28x28 images."""

    def __init__(self, sizes: tuple[int, ...] = (784, 512, 512, 10)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(fan_in, fan_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_mlp() -> MLP:
    """The MLP with seeded (torch default) weights, in eval mode."""
    with seeded(784):
        model = MLP()
    return model.eval()


LSTM_SEQ = 32
LSTM_FEATURES = 64
LSTM_HIDDEN = 128
LSTM_CLASSES = 10


class LSTMClassifier(nn.Module):
    """One-layer LSTM (batch first) over [N, 32, 64] sequences; a Linear head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(LSTM_FEATURES, LSTM_HIDDEN, batch_first=True)
        self.head = nn.Linear(LSTM_HIDDEN, LSTM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def build_lstm() -> LSTMClassifier:
    """The LSTM classifier with seeded (torch default) weights, in eval mode."""
    with seeded(32):
        model = LSTMClassifier()
    return model.eval()


# --------------------------------------------------------------------------------------
# Digits CNN (trained in kiln/zoo/_digits.py)
# --------------------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    """A small Conv-BN-ReLU network for [N, 1, 8, 8] digit images (pixels in [0, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
