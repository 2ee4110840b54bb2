"""stable-audio-tools checkpoint keys -> diffusers' Stable Audio components, by key mapping.

Written from the two state dicts' key names and shapes (no code from diffusers' own converter):
`dit(state)` -> StableAudioDiTModel, `vae(state)` -> AutoencoderOobleck,
`projection(state)` -> StableAudioProjectionModel, each from a full stable-audio-tools-layout
state dict. Only torch is needed (runs in the diffusers venv).

  DiT  model.model.X
    timestep_features.weight [F/2, 1]        -> time_proj.weight [F/2]
    to_timestep_embed / to_global_embed / to_cond_embed .{0,2}
                                              -> timestep_proj / global_proj / cross_attention_proj
    preprocess_conv, postprocess_conv         -> same names
    transformer.project_in / project_out      -> proj_in / proj_out
    transformer.layers.i.pre_norm / cross_attend_norm / ff_norm .{gamma, beta}
                                              -> transformer_blocks.i.norm1 / norm2 / norm3 .{weight, bias}
    ....self_attn.to_qkv [3D, D]              -> attn1.to_q / to_k / to_v (thirds)
    ....self_attn.to_out, cross_attn.to_out   -> attn1.to_out.0, attn2.to_out.0
    ....cross_attn.to_q                       -> attn2.to_q
    ....cross_attn.to_kv [2Dc, Dc]            -> attn2.to_k / to_v (halves)
    ....ff.ff.0.proj, ff.ff.2                 -> ff.net.0.proj, ff.net.2
  VAE  pretransform.model.{encoder,decoder}.layers.N ... -> encoder/decoder conv1, block.k, snake1, conv2
    Snake alpha/beta [C] -> [1, C, 1]
  Projection  conditioner.conditioners.seconds_start / seconds_total .embedder.embedding.{0,1}
                                              -> start_number_conditioner / end_number_conditioner
                                                 .time_positional_embedding.{0,1}
"""

from __future__ import annotations

import re

import torch


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def dit(state: dict) -> dict:
    source = _strip(state, "model.model.")
    out = {}
    simple = {"timestep_features.weight": None, "preprocess_conv.weight": "preprocess_conv.weight",
              "postprocess_conv.weight": "postprocess_conv.weight",
              "transformer.project_in.weight": "proj_in.weight",
              "transformer.project_out.weight": "proj_out.weight"}
    mlps = {"to_timestep_embed": "timestep_proj", "to_global_embed": "global_proj",
            "to_cond_embed": "cross_attention_proj"}
    norms = {"pre_norm": "norm1", "cross_attend_norm": "norm2", "ff_norm": "norm3"}
    for key, value in source.items():
        if key == "timestep_features.weight":
            out["time_proj.weight"] = value.reshape(-1)
        elif key in simple:
            out[simple[key]] = value
        elif key.split(".")[0] in mlps:
            head, rest = key.split(".", 1)
            out[f"{mlps[head]}.{rest}"] = value
        elif key == "transformer.rotary_pos_emb.inv_freq":
            continue  # diffusers computes its rotary angles in the pipeline
        else:
            match = re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)", key)
            if match is None:
                raise KeyError(f"no diffusers name for DiT key {key}")
            block, rest = f"transformer_blocks.{match.group(1)}", match.group(2)
            name, _, leaf = rest.rpartition(".")
            if name in norms:
                out[f"{block}.{norms[name]}.{'weight' if leaf == 'gamma' else 'bias'}"] = value
            elif rest == "self_attn.to_qkv.weight":
                for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{block}.attn1.to_{part}.weight"] = chunk
            elif rest == "cross_attn.to_kv.weight":
                for part, chunk in zip("kv", value.chunk(2, dim=0)):
                    out[f"{block}.attn2.to_{part}.weight"] = chunk
            elif rest == "self_attn.to_out.weight":
                out[f"{block}.attn1.to_out.0.weight"] = value
            elif rest == "cross_attn.to_out.weight":
                out[f"{block}.attn2.to_out.0.weight"] = value
            elif rest == "cross_attn.to_q.weight":
                out[f"{block}.attn2.to_q.weight"] = value
            elif rest.startswith("ff.ff.0.proj."):
                out[f"{block}.ff.net.0.proj.{leaf}"] = value
            elif rest.startswith("ff.ff.2."):
                out[f"{block}.ff.net.2.{leaf}"] = value
            else:
                raise KeyError(f"no diffusers name for DiT key {key}")
    return out


def _snake(value: torch.Tensor) -> torch.Tensor:
    return value.reshape(1, -1, 1)


def vae(state: dict) -> dict:
    source = _strip(state, "pretransform.model.")
    out = {}
    for part in ("encoder", "decoder"):
        layers = sorted({int(k.split(".")[2]) for k in source if k.startswith(f"{part}.layers.")})
        first, last_snake, last_conv = layers[0], layers[-2], layers[-1]
        for key, value in source.items():
            if not key.startswith(f"{part}.layers."):
                continue
            index, rest = key.split(".", 3)[2:]
            index = int(index)
            if index == first:
                out[f"{part}.conv1.{rest}"] = value
            elif index == last_snake:
                out[f"{part}.snake1.{rest}"] = _snake(value)
            elif index == last_conv:
                out[f"{part}.conv2.{rest}"] = value
            else:
                out[f"{part}.block.{index - 1}.{_block_key(part, rest)}"] = (
                    _snake(value) if rest.endswith(("alpha", "beta")) else value)
    return out


def _block_key(part: str, rest: str) -> str:
    """Inside one Oobleck block: `layers.j...` -> diffusers' names."""
    j, tail = rest.split(".", 2)[1:]
    j = int(j)
    # Encoder block: 3 residual units, snake, strided conv. Decoder: snake, transposed conv, 3 units.
    units = (0, 1, 2) if part == "encoder" else (2, 3, 4)
    if j in units:
        unit = units.index(j) + 1
        k, leaf = tail.split(".", 2)[1:]
        names = {0: "snake1", 1: "conv1", 2: "snake2", 3: "conv2"}
        return f"res_unit{unit}.{names[int(k)]}.{leaf}"
    if part == "encoder":
        return ("snake1." if j == 3 else "conv1.") + tail
    return ("snake1." if j == 0 else "conv_t1.") + tail


def projection(state: dict) -> dict:
    source = _strip(state, "conditioner.conditioners.")
    out = {}
    names = {"seconds_start": "start_number_conditioner", "seconds_total": "end_number_conditioner"}
    for key, value in source.items():
        conditioner, rest = key.split(".", 1)
        if conditioner not in names:
            continue
        rest = rest.replace("embedder.embedding.", "time_positional_embedding.")
        out[f"{names[conditioner]}.{rest}"] = value
    return out
