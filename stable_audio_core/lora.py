"""Low-rank adapters: the shared math, and stable-audio-3's LoRA files applied at run time.

The low-rank delta of LoRA (Hu et al. 2021) lives here once: `low_rank_delta` (the weight form,
``scale * up @ down``) and `low_rank_update` (the same delta applied to activations, for
training). The training pack's `LoRALinear` uses both; the stable-audio-3 adapters below use the
weight form.

stable-audio-3 LoRA files are safetensors whose metadata `lora_config` is JSON
(`rank`, `alpha`, `adapter_type`, `include`, `exclude`) and whose tensors are named
``<layer>.parametrizations.weight.0.<name>``, ``<layer>`` being ``model.<DiT path>`` or
``conditioners.<id>.<path>``. Each adapter maps a layer's weight W (Linear, or Conv1d seen as
[out, in * k]) to a new weight; with ``s = alpha / rank * strength`` and ``D = B @ A``
(``lora_A [r, in]``, ``lora_B [out, r]``) or, for the ``-xs`` types, ``D = U @ M_xs @ V^T`` with
U, V the top-r singular vectors of the base weight (LoRA-XS, Balazy et al. 2024):

- ``lora``, ``lora-xs``:  W + s D
- ``dora-rows``, ``dora-rows-xs`` (DoRA, Liu et al. 2024): V = W + s D, each row of V scaled to
  ``magnitude[out]``; ``dora-cols``, ``dora-cols-xs`` the same per column (``magnitude[in]``);
  the legacy type ``dora`` is rows, or cols when the file's magnitude is stored as [1, in];
- ``bora``, ``bora-xs``: rows scaled to ``magnitude_r``, then columns to ``magnitude_c``.

Norms get +1e-12 and the normalising types return W unchanged at strength 0, as the reference's.
Several LoRAs stack by composition in load order (``W -> p1(p0(W))``), as torch parametrizations
registered one after the other compose. Each LoRA has a strength, an interval of the flow time t
(the first item's t decides for the batch) and a layer filter (comma-separated substrings,
``[a-b]`` ranges expanded; matching DiT layers are left out); interval and filter act on the DiT
only, conditioner layers stay on. `merge_loras` folds the stack into plain weights.

The switch needs nothing from the caller: a forward pre-hook on the DiT reads t (its second
argument) before each call. One divergence, on purpose: the reference loads LoRA i's tensors into
parametrization slot i of every layer, so on a layer that lacks one of the earlier LoRAs they miss
their slot and are silently dropped; here each LoRA's tensors go to its own layers. Both agree
whenever every layer a later LoRA adapts carries the earlier ones too (e.g. the broadest first).

Usage::

    stack = apply_loras(dit, ["style.safetensors", ("drums.safetensors", 0.6)],
                        conditioners={"seconds_total": seconds_conditioner})
    dit(x, t, ...)            # a forward pre-hook switches each LoRA by t[0]
    merge_loras(dit, conditioners={"seconds_total": seconds_conditioner})   # plain weights
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .errors import CheckpointError, InputError

# Adapter type -> (tensors the file must hold, optional ones).
ADAPTER_TENSORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lora": (("lora_A", "lora_B"), ()),
    "dora-rows": (("lora_A", "lora_B", "magnitude"), ()),
    "dora-cols": (("lora_A", "lora_B", "magnitude"), ()),
    "bora": (("lora_A", "lora_B", "magnitude_r", "magnitude_c"), ()),
    "lora-xs": (("M_xs",), ("U", "V")),
    "dora-rows-xs": (("M_xs", "magnitude"), ("U", "V")),
    "dora-cols-xs": (("M_xs", "magnitude"), ("U", "V")),
    "bora-xs": (("M_xs", "magnitude_r", "magnitude_c"), ("U", "V")),
}
ADAPTER_TYPES = tuple(ADAPTER_TENSORS)
LEGACY_ADAPTER_TYPES = ("dora",)
DIT_PREFIX = "model."
CONDITIONER_PREFIX = "conditioners."
_NORM_EPS = 1e-12
_KEY = re.compile(r"^(?P<layer>.+)\.parametrizations\.weight\.(?P<index>\d+)\.(?P<name>[A-Za-z_]+)$")


# --- the shared low-rank math ---------------------------------------------------------------------

def low_rank_delta(up: Tensor, down: Tensor, scale: float | Tensor) -> Tensor:
    """The weight update ``scale * up @ down``: up Tensor[out, r], down Tensor[r, in] -> Tensor[out, in]."""
    return scale * (up @ down)


def low_rank_update(x: Tensor, down: Tensor, up: Tensor, scale: float | Tensor) -> Tensor:
    """The same update applied to activations, ``scale * x @ (up @ down)^T`` without forming it:
    Tensor[..., in] -> Tensor[..., out]."""
    return F.linear(F.linear(x, down), up) * scale


# --- one adapter, and the stack on a weight -------------------------------------------------------

@dataclass
class LoRAControl:
    """The run-time switches of one loaded LoRA, shared by all its adapters."""

    name: str
    adapter_type: str
    rank: int
    alpha: float
    strength: float = 1.0
    interval: tuple[float, float] = (0.0, 1.0)
    layer_filter: str = ""
    in_interval: bool = True
    layers: list[str] = field(default_factory=list)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRAAdapter(nn.Module):
    """One LoRA's map W -> W' on one layer (see the module doc for the types)."""

    def __init__(self, control: LoRAControl, tensors: dict[str, Tensor], *, gated: bool, filtered: bool):
        super().__init__()
        self.control = control
        self.adapter_type = control.adapter_type
        self.gated = gated          # DiT layers follow the interval; conditioner layers stay on
        self.filtered = filtered    # left out by the LoRA's layer filter
        for name, value in tensors.items():
            # The reference keeps adapters in float32 whatever the file stores (float16).
            self.register_buffer(name, value.float(), persistent=False)

    def active(self) -> bool:
        if self.control.strength == 0:
            return False
        return not self.gated or (self.control.in_interval and not self.filtered)

    def direction(self, scale: float) -> Tensor:
        """``scale * D`` as Tensor[out, in] in float32."""
        if self.adapter_type.endswith("-xs"):
            return low_rank_delta(self.U @ self.M_xs, self.V.T, scale)
        return low_rank_delta(self.lora_B, self.lora_A, scale)

    def forward(self, weight: Tensor) -> Tensor:
        scale = self.control.scaling * self.control.strength
        flat = weight.reshape(weight.shape[0], -1)
        if self.adapter_type in ("lora", "lora-xs"):
            return weight + self.direction(scale).view(weight.shape).to(weight.dtype)
        combined = flat.to(torch.float32) + self.direction(scale)
        if self.adapter_type.startswith("bora"):
            rows = self.magnitude_r.unsqueeze(1) * combined / (combined.norm(dim=1, keepdim=True) + _NORM_EPS)
            out = self.magnitude_c.unsqueeze(0) * rows / (rows.norm(dim=0, keepdim=True) + _NORM_EPS)
        else:
            dim = 1 if self.adapter_type.startswith("dora-rows") else 0
            out = combined / (combined.norm(dim=dim, keepdim=True) + _NORM_EPS) * self.magnitude.unsqueeze(dim)
        return out.view(weight.shape).to(weight.dtype)


def _version(tensor: Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # inference tensors keep no version counter
        return None


class LoRAStack(nn.Module):
    """The parametrization of one weight: its adapters applied in load order, the active ones only.

    The adapted weight is kept between calls while nothing changed (no gradients needed), so a
    sampler's steps pay for it once per switch of the active set.
    """

    def __init__(self):
        super().__init__()
        self.adapters = nn.ModuleList()
        self._cache: tuple | None = None
        self.parameter_order: list[str] = []

    def forward(self, weight: Tensor) -> Tensor:
        state = tuple((a.control.strength if a.active() else None) for a in self.adapters)
        version = _version(weight)
        cacheable = version is not None and not (torch.is_grad_enabled() and weight.requires_grad)
        key = (state, id(weight), version, weight.dtype, weight.device)
        if cacheable and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        out = weight
        for adapter in self.adapters:
            if adapter.active():
                out = adapter(out)
        self._cache = (key, out) if cacheable else None
        return out


# --- reading files ---------------------------------------------------------------------------------

@dataclass
class LoRAFile:
    """A LoRA file's adapters grouped by layer key (``model.<path>`` / ``conditioners.<id>.<path>``)."""

    path: str
    adapter_type: str
    rank: int
    alpha: float
    include: list[str] | None
    exclude: list[str] | None
    layers: dict[str, dict[str, Tensor]]


def _read_tensors(path: Path) -> tuple[dict[str, Tensor], dict | None]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                tensors = {key: f.get_tensor(key) for key in f.keys()}
                metadata = f.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"cannot read LoRA file {path}: {exc}") from exc
        if "lora_config" not in metadata:
            raise CheckpointError(
                f"LoRA file {path} has no 'lora_config' metadata (rank, alpha, adapter_type, include, "
                f"exclude); it was not written by stable-audio-3's save_lora_safetensors"
            )
        try:
            config = json.loads(metadata["lora_config"])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"LoRA file {path}: 'lora_config' metadata is not JSON: {exc}") from exc
        return tensors, config
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read LoRA file {path} (safetensors, or a .ckpt loadable with "
                              f"weights_only=True): {exc}") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"LoRA checkpoint {path} must hold {{'state_dict', 'lora_config'}}")
    if "lora_config" not in checkpoint:
        raise CheckpointError(f"LoRA checkpoint {path} has no 'lora_config' (rank, alpha, adapter_type)")
    return checkpoint["state_dict"], checkpoint["lora_config"]


def _resolve_legacy(adapter_type: str, tensors: dict[str, Tensor]) -> str:
    """``dora``: the first magnitude stored as [1, in] means columns, otherwise rows."""
    for key, value in tensors.items():
        if key.endswith(".magnitude"):
            if value.dim() == 2 and value.shape[0] == 1:
                return "dora-cols"
            break
    return "dora-rows"


def read_lora_file(path: str | Path) -> LoRAFile:
    """Read and check a stable-audio-3 LoRA file (its own consistency; `apply_loras` checks it
    against the model)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LoRA file not found: {path}")
    tensors, config = _read_tensors(path)
    if not isinstance(config, dict):
        raise CheckpointError(f"LoRA file {path}: lora_config must be a JSON object, got {config!r}")
    adapter_type = config.get("adapter_type", "lora")
    if adapter_type in LEGACY_ADAPTER_TYPES:
        adapter_type = _resolve_legacy(adapter_type, tensors)
    if adapter_type not in ADAPTER_TENSORS:
        raise CheckpointError(
            f"LoRA file {path}: unknown adapter_type {adapter_type!r}; supported: "
            f"{list(ADAPTER_TYPES) + list(LEGACY_ADAPTER_TYPES)}"
        )
    required, optional = ADAPTER_TENSORS[adapter_type]
    layers: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise CheckpointError(f"LoRA file {path}: {key!r} is not a LoRA tensor key "
                                  f"('<layer>.parametrizations.weight.0.<name>')")
        if match["index"] != "0":
            raise CheckpointError(f"LoRA file {path}: {key!r} has parametrization index {match['index']}; "
                                  f"a LoRA file holds one LoRA at index 0 (save stacked LoRAs one per file)")
        if match["name"] not in required + optional:
            raise CheckpointError(f"LoRA file {path}: {key!r} is not a tensor of adapter_type "
                                  f"{adapter_type!r} (expects {list(required)})")
        if not value.is_floating_point():
            raise CheckpointError(f"LoRA file {path}: {key!r} is {value.dtype}, not a float tensor")
        if match["name"] == "magnitude" and value.dim() == 2 and 1 in value.shape:
            value = value.reshape(-1)  # the old [out, 1] / [1, in] layout
        layers.setdefault(match["layer"], {})[match["name"]] = value
    if not layers:
        raise CheckpointError(f"LoRA file {path} holds no LoRA tensors")
    for layer, names in layers.items():
        missing = [name for name in required if name not in names]
        if missing:
            raise CheckpointError(f"LoRA file {path}: layer {layer!r} lacks {missing} for adapter_type "
                                  f"{adapter_type!r}")
    # Without a rank in the config, the first layer's (the reference's infer_global_rank).
    first = next(iter(layers.values()))
    rank = config.get("rank", first["lora_A"].shape[0] if "lora_A" in first else first["M_xs"].shape[0])
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise CheckpointError(f"LoRA file {path}: rank must be a positive integer, got {rank!r}")
    alpha = config.get("alpha", rank)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise CheckpointError(f"LoRA file {path}: alpha must be a number, got {alpha!r}")
    include, exclude = config.get("include"), config.get("exclude")
    for name, value in (("include", include), ("exclude", exclude)):
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise CheckpointError(f"LoRA file {path}: {name} must be a list of strings or null, got {value!r}")
    return LoRAFile(str(path), adapter_type, rank, float(alpha), include, exclude, layers)


# --- names ------------------------------------------------------------------------------------------

def expand_pattern(pattern: str) -> list[str]:
    """'layers.[0-2].ff' -> ['layers.0.ff', 'layers.1.ff', 'layers.2.ff'] (ranges may count down)."""
    parts = re.split(r"\[(\d+)-(\d+)\]", pattern)
    if len(parts) == 1:
        return [pattern]
    literals, starts, ends = parts[0::3], parts[1::3], parts[2::3]
    pools = []
    for start, end in zip(starts, ends):
        a, b = int(start), int(end)
        step = 1 if b >= a else -1
        pools.append([str(n) for n in range(a, b + step, step)])
    expanded = []
    for combo in product(*pools):
        pieces = [literals[0]]
        for number, literal in zip(combo, literals[1:]):
            pieces += [number, literal]
        expanded.append("".join(pieces))
    return expanded


def _matches_any(name: str, patterns: Sequence[str] | None) -> bool:
    return any(expanded in name for pattern in patterns or () for expanded in expand_pattern(pattern.strip()))


def _filtered(name: str, layer_filter: str) -> bool:
    """The reference's layer filter: comma-separated, lower-cased, stripped substrings (an entry of
    blanks becomes "" and so matches everything, as there)."""
    entries = [entry.lower().strip() for entry in (layer_filter or "").strip().split(",") if len(entry)]
    return any(expanded in name for entry in entries for expanded in expand_pattern(entry))


def _adaptable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv1d))


def _base_weight(module: nn.Module) -> Tensor:
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


# --- applying, switching, merging -------------------------------------------------------------------

def _svd_bases(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """The top-`rank` singular vectors of a base weight, the largest entry of each U column made
    positive (the reference's sign convention): U [out, r], V [in, r]."""
    u, _, vh = torch.linalg.svd(weight.reshape(weight.shape[0], -1).detach().cpu().float(), full_matrices=False)
    columns = torch.arange(u.shape[1])
    signs = u[u.abs().argmax(dim=0), columns].sign()
    signs[signs == 0] = 1
    u, vh = u * signs.unsqueeze(0), vh * signs.unsqueeze(1)
    return u[:, :rank].to(weight.device), vh[:rank].T.to(weight.device)


def _layer_tensors(lora: LoRAFile, key: str, module: nn.Module, svd_bases: Mapping | None) -> dict[str, Tensor]:
    """The adapter tensors for one layer, shape-checked (with U, V for the -xs types)."""
    weight = _base_weight(module)
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    tensors = dict(lora.layers[key])
    if lora.adapter_type.endswith("-xs") and "U" not in tensors:
        bases = None if svd_bases is None else svd_bases.get(
            ("model." if key.startswith(DIT_PREFIX) else "conditioner.") + key + ".weight")
        if bases is not None:
            tensors["U"], tensors["V"] = bases["U"][:, :lora.rank], bases["V"][:, :lora.rank]
        else:
            tensors["U"], tensors["V"] = _svd_bases(weight, lora.rank)
    r = lora.rank
    magnitude_size = fan_in if lora.adapter_type.startswith("dora-cols") else fan_out
    expected = {"lora_A": (r, fan_in), "lora_B": (fan_out, r), "M_xs": (r, r), "U": (fan_out, r),
                "V": (fan_in, r), "magnitude": (magnitude_size,), "magnitude_r": (fan_out,),
                "magnitude_c": (fan_in,)}
    wrong = [f"{key}.parametrizations.weight.0.{name}: {tuple(value.shape)} (expected {expected[name]})"
             for name, value in tensors.items() if tuple(value.shape) != expected[name]]
    if wrong:
        raise CheckpointError(
            f"LoRA file {lora.path} (adapter_type {lora.adapter_type!r}, rank {r}) does not fit the model's "
            f"layer {key} (weight {tuple(weight.shape)}): " + "; ".join(wrong)
        )
    return tensors


@dataclass
class LoRASpec:
    """One LoRA to apply: its file, strength, flow-time interval and layer filter."""

    path: str | Path
    strength: float = 1.0
    interval: tuple[float, float] = (0.0, 1.0)
    layer_filter: str = ""


def _spec(item) -> LoRASpec:
    if isinstance(item, LoRASpec):
        spec = item
    elif isinstance(item, (str, Path)):
        spec = LoRASpec(item)
    elif isinstance(item, tuple) and 1 <= len(item) <= 2:
        spec = LoRASpec(*item)
    elif isinstance(item, dict):
        unknown = sorted(set(item) - {"path", "strength", "interval", "layer_filter"})
        if unknown or "path" not in item:
            raise InputError(f"a LoRA given as a dict needs 'path' and may have 'strength', 'interval', "
                             f"'layer_filter'; got keys {sorted(item)}")
        spec = LoRASpec(**item)
    else:
        raise InputError(f"a LoRA is a path, (path, strength), a dict or a LoRASpec; got {item!r}")
    if not isinstance(spec.strength, (int, float)) or isinstance(spec.strength, bool):
        raise InputError(f"LoRA strength must be a number, got {spec.strength!r} for {spec.path}")
    spec.interval = _interval(spec.interval, spec.path)
    if not isinstance(spec.layer_filter, str):
        raise InputError(f"LoRA layer_filter must be a string, got {spec.layer_filter!r} for {spec.path}")
    return spec


def _interval(interval, what) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise InputError(f"LoRA interval must be (low, high) in flow time t, got {interval!r} for {what}") from None
    if low > high:
        raise InputError(f"LoRA interval {interval!r} for {what} has low > high")
    return low, high


class AppliedLoRAs:
    """The LoRAs applied to one DiT (and its conditioners), in stack order; switches them at run time."""

    def __init__(self, dit: nn.Module, conditioners: Mapping[str, nn.Module]):
        self.dit = dit
        self.conditioners = dict(conditioners)
        self.loras: list[LoRAControl] = []
        self._hook = dit.register_forward_pre_hook(self._gate, with_kwargs=True)

    def __len__(self) -> int:
        return len(self.loras)

    def _gate(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Before each DiT call: switch every LoRA by whether t[0] lies in its interval."""
        t = args[1] if len(args) > 1 else kwargs.get("t")
        if t is None:
            return
        sigma = torch.as_tensor(t).reshape(-1)[0].float()
        if getattr(module, "diffusion_objective", None) == "v":
            sigma = torch.sin(sigma * torch.pi / 2)
        sigma = float(sigma)
        for control in self.loras:
            control.in_interval = control.interval[0] <= sigma <= control.interval[1]

    def set_strength(self, index: int, strength: float) -> None:
        self._control(index).strength = float(strength)

    def set_interval(self, index: int, interval: tuple[float, float]) -> None:
        self._control(index).interval = _interval(interval, f"LoRA {index}")

    def set_layer_filter(self, index: int, layer_filter: str) -> None:
        control = self._control(index)
        control.layer_filter = layer_filter
        for name, adapter in self._adapters():
            if adapter.control is control and adapter.gated:
                adapter.filtered = _filtered(name, layer_filter)

    def _control(self, index: int) -> LoRAControl:
        if not 0 <= index < len(self.loras):
            raise InputError(f"no LoRA {index}: {len(self.loras)} applied")
        return self.loras[index]

    def _modules(self):
        """(name in the reference's namespace, module) of the DiT and the conditioners."""
        for name, module in self.dit.named_modules():
            yield DIT_PREFIX + name, module
        for cond_id, conditioner in self.conditioners.items():
            for name, module in conditioner.named_modules():
                yield f"{CONDITIONER_PREFIX}{cond_id}." + name if name else f"{CONDITIONER_PREFIX}{cond_id}", module

    def _adapters(self):
        """(DiT-relative name, adapter) for every adapter; the layer filter sees these names."""
        for name, module in self._modules():
            if parametrize.is_parametrized(module, "weight"):
                for p in module.parametrizations.weight:
                    if isinstance(p, LoRAStack):
                        for adapter in p.adapters:
                            yield name[len(DIT_PREFIX):] if name.startswith(DIT_PREFIX) else name, adapter

    def add(self, specs: Sequence, svd_bases: Mapping | None = None) -> None:
        """Read and check every file against the model, then attach them all (nothing is attached
        when one fails)."""
        specs = [_spec(item) for item in specs]
        files = [read_lora_file(spec.path) for spec in specs]
        modules = {name: module for name, module in self._modules() if _adaptable(module)}
        order = {name: i for i, name in enumerate(modules)}
        plans = []
        for spec, lora in zip(specs, files):
            unknown = sorted(key for key in lora.layers if key not in modules)
            if unknown:
                hint = ""
                if any(key.startswith(CONDITIONER_PREFIX) for key in unknown) and not self.conditioners:
                    hint = " (it adapts conditioner layers: pass conditioners={'seconds_total': ...})"
                raise CheckpointError(
                    f"LoRA file {lora.path} adapts layers the model does not have{hint}: "
                    f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''} ({len(unknown)} in all)"
                )
            targeted = [name for name in modules if name.startswith(DIT_PREFIX)
                        and (lora.include is None or _matches_any(name, lora.include))
                        and not (lora.exclude is not None and _matches_any(name, lora.exclude))]
            missing = [name for name in targeted if name not in lora.layers]
            if missing:
                raise CheckpointError(
                    f"LoRA file {lora.path} selects DiT layers (include {lora.include}, exclude {lora.exclude}) "
                    f"it holds no tensors for: {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
                    f"it was made for a different model"
                )
            tensors = {key: _layer_tensors(lora, key, modules[key], svd_bases) for key in lora.layers}
            plans.append((spec, lora, tensors))
        for spec, lora, tensors in plans:
            control = LoRAControl(Path(lora.path).stem, lora.adapter_type, lora.rank, lora.alpha,
                                  float(spec.strength), spec.interval, spec.layer_filter, layers=sorted(tensors))
            self.loras.append(control)
            for key in sorted(tensors, key=order.__getitem__):
                module = modules[key]
                gated = key.startswith(DIT_PREFIX)
                filtered = gated and _filtered(key[len(DIT_PREFIX):], spec.layer_filter)
                weight = _base_weight(module)
                adapter = LoRAAdapter(control, tensors[key], gated=gated, filtered=filtered).to(weight.device)
                _stack_of(module).adapters.append(adapter)

    def remove(self) -> None:
        """Take every LoRA off (the base weights come back) and the t hook with them."""
        for _, module in self._modules():
            if _stack_of(module, create=False) is not None:
                _unparametrize(module, fold=False)
        self.loras.clear()
        self._hook.remove()
        _APPLIED.pop(id(self.dit), None)

    def merge(self) -> None:
        """Fold the stack into plain weights at the current strengths and layer filters; the
        modules keep their type-free state dict keys. Interval-limited LoRAs cannot be folded."""
        limited = [f"{i} ({c.name}: {c.interval})" for i, c in enumerate(self.loras)
                   if not (c.interval[0] <= 0.0 and c.interval[1] >= 1.0)]
        if limited:
            raise InputError(
                f"LoRA(s) {limited} are limited to part of the flow time; a merged checkpoint cannot "
                f"switch by t. Set their interval to (0, 1) with set_interval, or keep them at run time"
            )
        for control in self.loras:
            control.in_interval = True
        with torch.no_grad():
            for _, module in self._modules():
                if _stack_of(module, create=False) is not None:
                    _unparametrize(module, fold=True)
        self.loras.clear()
        self._hook.remove()
        _APPLIED.pop(id(self.dit), None)


def _stack_of(module: nn.Module, create: bool = True) -> LoRAStack | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, LoRAStack):
                return p
    if not create:
        return None
    stack = LoRAStack()
    stack.parameter_order = list(module._parameters)
    parametrize.register_parametrization(module, "weight", stack, unsafe=True)
    return stack


def _unparametrize(module: nn.Module, fold: bool) -> None:
    """Remove the LoRA stack from `module` (folding it into the weight or not), keeping the
    original parameter order so the state dict reads as before."""
    order = _stack_of(module, create=False).parameter_order
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=fold)
    parameters = module._parameters
    module._parameters = {name: parameters[name] for name in order if name in parameters}
    module._parameters.update({k: v for k, v in parameters.items() if k not in module._parameters})


# DiT -> its AppliedLoRAs (keyed by id: modules are not hashable by value and must not be kept alive).
_APPLIED: dict[int, AppliedLoRAs] = {}


def applied_loras(dit: nn.Module) -> AppliedLoRAs | None:
    """The LoRAs applied to `dit`, or None."""
    applied = _APPLIED.get(id(dit))
    return applied if applied is not None and applied.dit is dit else None


def apply_loras(dit: nn.Module, loras: Sequence, *, conditioners: Mapping[str, nn.Module] | None = None,
                svd_bases: str | Path | Mapping | None = None) -> AppliedLoRAs:
    """Attach stable-audio-3 LoRA files to a built SA3 DiT (and its conditioners), in place.

    Args:
        dit: an SA3DiT (names as the reference's `DiffusionTransformer`).
        loras: in stack order, each a path, ``(path, strength)``, a dict with ``path`` and optional
            ``strength``, ``interval`` (flow time, default (0, 1)), ``layer_filter``, or a LoRASpec.
        conditioners: conditioner id -> module (e.g. {"seconds_total": ExpoNumberConditioner}),
            needed when a file adapts ``conditioners.<id>.*`` layers.
        svd_bases: for the ``-xs`` types, precomputed bases (the model config's `svd_bases_path`:
            a torch file of {"model.model.<path>.weight": {"U", "V"}, ...}); default: the SVD of
            the base weights, as the reference computes it without one.

    Returns the AppliedLoRAs (strengths, intervals and filters can be changed on it). Calling again
    on the same DiT stacks more LoRAs after the first ones.
    """
    if isinstance(svd_bases, (str, Path)):
        svd_bases = torch.load(str(svd_bases), map_location="cpu", weights_only=True)
    applied = applied_loras(dit)
    if applied is None:
        applied = AppliedLoRAs(dit, conditioners or {})
        _APPLIED[id(dit)] = applied
    elif conditioners and dict(conditioners) != applied.conditioners:
        raise InputError("pass the same conditioners as when the first LoRAs were applied to this DiT")
    try:
        applied.add(loras, svd_bases)
    except Exception:
        if not applied.loras:
            applied.remove()
        raise
    return applied


def merge_loras(dit: nn.Module) -> nn.Module:
    """Fold the LoRAs applied to `dit` (and its conditioners) into plain weights; returns `dit`.

    The state dicts then have the plain keys (a checkpoint's `model.model.*` and
    `conditioner.conditioners.*`), and the model computes what the runtime LoRAs computed.
    """
    applied = applied_loras(dit)
    if applied is None:
        raise InputError("this DiT has no LoRAs applied (apply_loras first)")
    applied.merge()
    return dit


def remove_loras(dit: nn.Module) -> nn.Module:
    """Take the LoRAs off `dit` (and its conditioners); returns `dit` with its base weights."""
    applied = applied_loras(dit)
    if applied is not None:
        applied.remove()
    return dit


# --- whole Stable Audio 3 models ----------------------------------------------------------------------

def load_loras(model, loras: Sequence) -> AppliedLoRAs:
    """Apply LoRA files to a loaded Stable Audio 3 model in place: its DiT and the conditioner
    layers the files adapt (e.g. seconds_total). `loras` as in `apply_loras`; calling again stacks
    more after the first ones."""
    if not getattr(model, "is_sa3", False):
        raise InputError("stable-audio-3 LoRA files apply to Stable Audio 3 models only (model_config.json "
                         "with a 'dit' diffusion of the sa3 family); this model is not one")
    return apply_loras(model.backbone, loras, conditioners=dict(model.conditioner.conditioners))


def model_with_loras(model, loras: Sequence):
    """A new model: `model` with `loras` stacked after the LoRAs it already carries (from an
    earlier `model_with_loras`); `model` itself is unchanged. The DiT and conditioners are copied,
    the autoencoder and the text encoders shared."""
    import copy

    base = getattr(model, "lora_base", None) or model
    if applied_loras(base.backbone) is not None:
        raise InputError("this model carries LoRAs applied in place (load_loras); start from the plain model")
    specs = [*getattr(model, "lora_specs", ()), *loras]
    shared = [base.autoencoder] + [getattr(c, "text_encoder", None) for c in base.conditioner.conditioners.values()]
    memo = {id(item): item for item in shared if item is not None}
    adapted = copy.deepcopy(base, memo)
    load_loras(adapted, specs)
    adapted.lora_base, adapted.lora_specs = base, specs
    return adapted

