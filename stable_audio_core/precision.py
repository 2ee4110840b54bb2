"""The dtype a model computes its activations in.

A module's activations take its parameters' dtype, unless `acceleration.use_bfloat16_matmuls`
stored only its matmul weights in a narrower one: that swap records the wider dtype on every
module as `activation_dtype`. Model edges (an autoencoder's encode/decode, the pipeline) cast
their inputs to it once; forward passes never ask.
"""

from __future__ import annotations

import torch
from torch import nn


def activation_dtype(module: nn.Module) -> torch.dtype:
    """The dtype `module` computes its activations in."""
    return getattr(module, "activation_dtype", None) or next(module.parameters()).dtype
