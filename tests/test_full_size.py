"""The full Stable Audio Open 1.0 architecture, built from our bundled config on the meta device
(instant, no memory), has exactly the reference's state-dict keys, shapes and parameter counts,
so the public checkpoint loads strictly."""

import json

import torch

from stable_audio_core.factory import build_model

from helpers import FIXTURES, ROOT


def _reference(path):
    data = json.loads(path.read_text())
    return {k: tuple(shape) for k, shape in data["state_dict"]}, data["parameter_count"]


def test_sao_1_0_builds_with_the_reference_keys_shapes_and_parameter_counts():
    with torch.device("meta"):
        model = build_model(ROOT / "stable_audio_core" / "configs" / "stable_audio_open_1.0.json")
    dit_keys, dit_count = _reference(FIXTURES / "dit" / "sao_1_0_dit_keys.json")
    vae_keys, vae_count = _reference(FIXTURES / "vae" / "sao_1_0_vae_keys.json")
    assert dit_count == 1_056_828_544 and vae_count == 156_112_514

    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k[len("model.model."):]: s for k, s in ours.items() if k.startswith("model.model.")} == dit_keys
    assert {k[len("pretransform.model."):]: s for k, s in ours.items()
            if k.startswith("pretransform.model.")} == vae_keys
    assert sum(p.numel() for p in model.backbone.parameters()) == dit_count
    assert sum(p.numel() for p in model.autoencoder.parameters()) == vae_count
    # The timing conditioners are the only conditioner weights in the checkpoint (T5 is separate).
    conditioner_keys = sorted(k for k in ours if k.startswith("conditioner."))
    assert conditioner_keys == sorted(
        f"conditioner.conditioners.{cid}.embedder.embedding.{part}"
        for cid in ("seconds_start", "seconds_total") for part in ("0.weights", "1.weight", "1.bias"))


def test_checkpoint_without_derived_buffers_still_loads(tmp_path):
    # ComfyUI's repackaged files drop the all-zero LayerNorm beta buffers.
    from safetensors.torch import save_file

    from helpers import perturbed_model, tiny_config
    from stable_audio_core.factory import load_model
    model = perturbed_model(tiny_config())
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("norm.beta")}
    assert len(sd) < len(model.state_dict())
    save_file(sd, str(tmp_path / "repack.safetensors"))
    loaded = load_model(tiny_config(), tmp_path / "repack.safetensors")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
