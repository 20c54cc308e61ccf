"""The zoo's catalogue: one :class:`ZooEntry` per built-in model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from kiln.zoo import _digits, _models


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """A built-in model: how to build it, feed it and name its inputs and outputs.

    Attributes:
        name: The zoo name, e.g. ``"resnet18"``.
        description: One line on the architecture, inputs and outputs.
        input_names: Names of the model inputs, in ``forward`` order.
        output_names: Names of the model outputs, in the order ``forward`` returns them.
        dynamic_batch: Whether the model can be exported with a symbolic batch dimension.
        factory: Builds the module (prefer :meth:`build`).
        inputs_factory: Makes example inputs for a batch size (prefer :meth:`example_inputs`).
    """

    name: str
    description: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_batch: bool
    factory: Callable[[], torch.nn.Module] = dataclasses.field(repr=False, compare=False)
    inputs_factory: Callable[[int], tuple[torch.Tensor, ...]] = dataclasses.field(
        repr=False, compare=False
    )

    def build(self) -> torch.nn.Module:
        """A fresh module with the entry's deterministic weights, in eval mode."""
        return self.factory().eval()

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Deterministic example inputs with ``batch`` rows, one tensor per input name.

        Raises:
            ValueError: If ``batch`` is not a positive integer.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        return self.inputs_factory(batch)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _image_inputs(batch: int) -> tuple[torch.Tensor, ...]:
    return (_randn(batch, 3, 224, 224, seed=224),)


def _bert_inputs(batch: int) -> tuple[torch.Tensor, ...]:
    """Random token ids; row i is padded (mask 0, token id 0) after 128 - 16 * (i % 8) tokens."""
    generator = torch.Generator().manual_seed(30522)
    ids = torch.randint(1, _models.BERT_VOCAB, (batch, _models.BERT_SEQ), generator=generator)
    lengths = _models.BERT_SEQ - 16 * (torch.arange(batch) % 8)
    mask = (torch.arange(_models.BERT_SEQ)[None, :] < lengths[:, None]).to(torch.int64)
    return ids * mask, mask


def _mlp_inputs(batch: int) -> tuple[torch.Tensor, ...]:
    return (_randn(batch, 784, seed=784),)


def _lstm_inputs(batch: int) -> tuple[torch.Tensor, ...]:
    return (_randn(batch, _models.LSTM_SEQ, _models.LSTM_FEATURES, seed=32),)


def _digits_inputs(batch: int) -> tuple[torch.Tensor, ...]:
    """The first ``batch`` held-out images (cycled when batch exceeds the 450 available)."""
    x_test = _digits.digits_data()[2]
    rows = np.arange(batch) % len(x_test)
    return (torch.from_numpy(np.ascontiguousarray(x_test[rows])),)


ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="resnet18",
        description="ResNet-18 (BasicBlocks [2,2,2,2], BatchNorm): image [N,3,224,224] "
        "-> logits [N,1000]; seeded random weights.",
        input_names=("image",),
        output_names=("logits",),
        dynamic_batch=True,
        factory=_models.build_resnet18,
        inputs_factory=_image_inputs,
    ),
    ZooEntry(
        name="mobilenetv2",
        description="MobileNetV2 (width 1.0, inverted residuals, depthwise convs, ReLU6): "
        "image [N,3,224,224] -> logits [N,1000]; seeded random weights.",
        input_names=("image",),
        output_names=("logits",),
        dynamic_batch=True,
        factory=_models.build_mobilenetv2,
        inputs_factory=_image_inputs,
    ),
    ZooEntry(
        name="bert",
        description="BERT-style encoder (4 layers, d_model 256, 4 heads, FFN 1024, GELU, "
        "post-LayerNorm, explicit attention): input_ids int64 [N,128] and attention_mask "
        "int64 [N,128] (1 = token, 0 = padding) -> last_hidden_state [N,128,256] and "
        "pooler_output [N,256]; seeded random weights.",
        input_names=("input_ids", "attention_mask"),
        output_names=("last_hidden_state", "pooler_output"),
        dynamic_batch=True,
        factory=_models.build_bert,
        inputs_factory=_bert_inputs,
    ),
    ZooEntry(
        name="mlp",
        description="MLP 784-512-512-10 with ReLU: x [N,784] -> logits [N,10]; "
        "seeded random weights.",
        input_names=("x",),
        output_names=("logits",),
        dynamic_batch=True,
        factory=_models.build_mlp,
        inputs_factory=_mlp_inputs,
    ),
    ZooEntry(
        name="lstm",
        description="One-layer LSTM (hidden 128) + Linear head on the last step: "
        "x [N,32,64] -> logits [N,10]; seeded random weights.",
        input_names=("x",),
        output_names=("logits",),
        dynamic_batch=True,
        factory=_models.build_lstm,
        inputs_factory=_lstm_inputs,
    ),
    ZooEntry(
        name="digits_cnn",
        description="Small Conv-BN-ReLU CNN trained on scikit-learn's digits: image "
        "[N,1,8,8] in [0,1] -> logits [N,10]; ~99% held-out top-1 (see digits_data).",
        input_names=("image",),
        output_names=("logits",),
        dynamic_batch=True,
        factory=_digits.build_digits_cnn,
        inputs_factory=_digits_inputs,
    ),
)
