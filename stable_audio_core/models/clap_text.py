"""CLAP's text tower (Wu et al. 2023, "Large-scale Contrastive Language-Audio Pretraining"): a
RoBERTa encoder (Liu et al. 2019) and a projection into the joint audio-text space. Inference only.

Matches Hugging Face's `ClapTextModel` + `text_projection` (the laion-clap text branch). What sets
RoBERTa apart from a textbook encoder:
- positions count real tokens only: the i-th non-pad token (from 1) sits at position pad_id + i,
  every pad token at pad_id, whose embedding row is never a real position (fairseq's convention);
- post-LN blocks: LayerNorm after each residual sum, and one after the embeddings;
- the pooled output is tanh(Linear(h)) of the first token (<s>); the projection is
  Linear -> ReLU -> Linear.
State-dict keys are transformers' (`text_model.encoder.layer.{i}.attention.self.query.weight`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InputError
from .attention import attention
from .clap_config import ClapTextConfig
from .hf_folder import ACTIVATIONS, token_mask


def holder(**children: nn.Module) -> nn.Module:
    """An empty module that only names its children: reproduces transformers' key nesting
    (`attention.output.dense`) without a class per level."""
    module = nn.Module()
    for name, child in children.items():
        module.add_module(name, child)
    return module


class ClapProjection(nn.Module):
    """Pooled feature -> joint embedding: Linear -> activation -> Linear (not normalised)."""

    def __init__(self, in_dim: int, projection_dim: int, activation: str):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, projection_dim)
        self.linear2 = nn.Linear(projection_dim, projection_dim)
        self.activation = ACTIVATIONS[activation]

    def forward(self, pooled: Tensor) -> Tensor:
        """Tensor[B, in_dim] -> Tensor[B, projection_dim]"""
        return self.linear2(self.activation(self.linear1(pooled)))


class ClapTower(nn.Module):
    """What both CLAP towers share: a config (of type `config_class`) giving the pooled feature's
    width (`hidden_size`) and the joint space's (`projection_dim`)."""

    config_class: type

    @classmethod
    def from_config(cls, raw: dict) -> "ClapTower":
        """The tower's section of a CLAP config.json (`text_config`, `audio_config`) -> a freshly
        initialised tower."""
        return cls(cls.config_class.from_dict(raw))

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def projection_dim(self) -> int:
        return self.config.projection_dim


class RobertaEmbeddings(nn.Module):
    def __init__(self, config: ClapTextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pad_token_id = config.pad_token_id

    def forward(self, input_ids: Tensor) -> Tensor:
        """LongTensor[B, L] -> Tensor[B, L, D]. Every token has type 0, as in CLAP."""
        is_token = (input_ids != self.pad_token_id).long()
        positions = torch.cumsum(is_token, dim=1) * is_token + self.pad_token_id
        embedded = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings.weight[0]
            + self.position_embeddings(positions)
        )
        return self.LayerNorm(embedded)


class RobertaLayer(nn.Module):
    """Self-attention, then a feed-forward, each added to its input and LayerNorm'd (post-LN)."""

    def __init__(self, config: ClapTextConfig):
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.attention = holder(
            self=holder(query=nn.Linear(width, width), key=nn.Linear(width, width),
                        value=nn.Linear(width, width)),
            output=holder(dense=nn.Linear(width, width),
                          LayerNorm=nn.LayerNorm(width, eps=config.layer_norm_eps)),
        )
        self.intermediate = holder(dense=nn.Linear(width, config.intermediate_size))
        self.output = holder(dense=nn.Linear(config.intermediate_size, width),
                             LayerNorm=nn.LayerNorm(width, eps=config.layer_norm_eps))
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """x: Tensor[B, L, D], key_mask: BoolTensor[B, 1, 1, L] (True = attend) -> Tensor[B, L, D]"""
        batch, length, width = x.shape
        projections = self.attention.self

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)

        context = attention(heads(projections.query(x)), heads(projections.key(x)),
                            heads(projections.value(x)), key_mask)
        context = context.transpose(1, 2).reshape(batch, length, width)
        x = self.attention.output.LayerNorm(self.attention.output.dense(context) + x)
        hidden = self.activation(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(hidden) + x)


@dataclass
class ClapTextOutput:
    """hidden_states: the embeddings then every layer's output, each Tensor[B, L, D]
    (hidden_states[-2] is the penultimate layer); pooled: Tensor[B, D];
    text_embeds: Tensor[B, P], the projection of `pooled` (not normalised)."""

    hidden_states: tuple[Tensor, ...]
    pooled: Tensor
    text_embeds: Tensor

    @property
    def last_hidden_state(self) -> Tensor:
        return self.hidden_states[-1]


class ClapTextModel(ClapTower):
    """Token ids -> all hidden states, pooled feature and joint-space embedding.

    Keys: `text_model.{embeddings,encoder,pooler}.*` and `text_projection.*`, the layout of
    transformers' ClapModel and ClapTextModelWithProjection.
    """

    config_class = ClapTextConfig

    def __init__(self, config: ClapTextConfig):
        super().__init__()
        self.config = config
        self.text_model = holder(
            embeddings=RobertaEmbeddings(config),
            encoder=holder(layer=nn.ModuleList(RobertaLayer(config) for _ in range(config.num_hidden_layers))),
            pooler=holder(dense=nn.Linear(config.hidden_size, config.hidden_size)),
        )
        self.text_projection = ClapProjection(config.hidden_size, config.projection_dim,
                                              config.projection_hidden_act)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> ClapTextOutput:
        """input_ids LongTensor[B, L], attention_mask Bool/0-1 Tensor[B, L] (True = token)."""
        key_mask = token_mask(input_ids, attention_mask)[:, None, None, :]
        if input_ids.shape[1] > self.config.max_text_length:
            raise InputError(
                f"{input_ids.shape[1]} tokens exceed the {self.config.max_text_length} positions of "
                "this CLAP text model; truncate the text"
            )
        hidden = self.text_model.embeddings(input_ids)
        hidden_states = [hidden]
        for layer in self.text_model.encoder.layer:
            hidden = layer(hidden, key_mask)
            hidden_states.append(hidden)
        pooled = torch.tanh(self.text_model.pooler.dense(hidden[:, 0]))
        return ClapTextOutput(tuple(hidden_states), pooled, self.text_projection(pooled))
