"""Checkpoint loading: strict, safe (no pickles), weight-norm forms, and errors that list problems."""

import pytest
import torch
from safetensors.torch import save_file

from stable_audio_core.acceleration import prepare_for_inference
from stable_audio_core.checkpoint import read_state_dict
from stable_audio_core.errors import CheckpointError
from stable_audio_core.factory import load_model

from helpers import perturbed_model, save_checkpoint


class ArbitraryObject:
    """Stands for any pickled object that is not a tensor: loading it must be refused."""


def _out(model):
    torch.manual_seed(0)
    x, t = torch.randn(1, 16, 8), torch.tensor([0.4])
    inputs = model.condition([{"prompt": 1.0, "seconds_start": 0, "seconds_total": 5}])
    return model.model_fn(inputs)(x, t), model.autoencoder.decode(torch.randn(1, 16, 8))


def test_saved_checkpoint_round_trips_exactly(config, tmp_path):
    model = perturbed_model(config)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_model(config, path)
    prepare_for_inference(model)  # the inference form load_model returns (same kernels)
    for a, b in zip(_out(model), _out(loaded)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_folded_and_parametrized_weight_norm_load_to_the_same_model(config, tmp_path):
    model = perturbed_model(config)
    sd = model.state_dict()
    folded, parametrized = {}, {}
    for key, value in sd.items():
        if key.endswith(".weight_g"):
            stem = key[: -len(".weight_g")]
            v = sd[stem + ".weight_v"]
            folded[stem + ".weight"] = value * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
            parametrized[stem + ".parametrizations.weight.original0"] = value
        elif key.endswith(".weight_v"):
            parametrized[key[: -len(".weight_v")] + ".parametrizations.weight.original1"] = value
        else:
            folded[key] = value
            parametrized[key] = value
    assert len(folded) < len(sd), "the tiny config must contain weight-normed convs"
    expected = _out(model)
    for variant in (folded, parametrized):
        path = tmp_path / "variant.safetensors"
        save_file({k: v.contiguous() for k, v in variant.items()}, str(path))
        # Refolding g * v / |v| is exact up to float rounding of the norm.
        for a, b in zip(expected, _out(load_model(config, path))):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_missing_and_unexpected_keys_are_listed_by_prefix(config, tmp_path):
    sd = perturbed_model(config).state_dict()
    del sd["model.model.to_cond_embed.0.weight"]
    sd["model.model.extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(CheckpointError) as info:
        load_model(config, path)
    message = str(info.value)
    assert "missing" in message and "to_cond_embed.0.weight" in message
    assert "not in the model" in message and "extra_head.weight" in message


def test_shape_mismatch_names_both_shapes(config, tmp_path):
    sd = perturbed_model(config).state_dict()
    sd["model.model.preprocess_conv.weight"] = torch.zeros(16, 16, 3)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(CheckpointError, match=r"preprocess_conv.weight: checkpoint \(16, 16, 3\) vs model \(16, 16, 1\)"):
        load_model(config, path)


def test_keys_outside_the_layout_are_reported(config, tmp_path):
    sd = perturbed_model(config).state_dict()
    sd["optimizer.step"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(CheckpointError, match="outside the stable-audio-tools layout.*optimizer.step"):
        load_model(config, path)


def test_ckpt_files_load_only_as_plain_tensors(config, tmp_path):
    model = perturbed_model(config)
    good = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, good)
    assert set(read_state_dict(good)) == set(model.state_dict())

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": ArbitraryObject()}}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(evil)


def test_missing_file_and_garbage_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_state_dict(junk)


def test_comfyui_single_file_with_embedded_t5_loads_with_a_tokenizer_folder(tmp_path):
    """ComfyUI's repackaged file: the model keys plus T5 under text_encoders.t5base.transformer.*"""
    import json
    import shutil

    from safetensors.torch import load_file

    from helpers import FIXTURES, tiny_config
    from stable_audio_core.errors import InputError
    from stable_audio_core.pipeline import generate
    from fixture_inputs import build_test_tokenizer

    config = tiny_config()
    config["model"]["conditioning"]["configs"][0] = {
        "id": "prompt", "type": "t5", "config": {"t5_model_name": "local-t5", "max_length": 8}}
    model = perturbed_model(config)
    t5_weights = load_file(str(FIXTURES / "t5" / "relu" / "model.safetensors"))
    single = dict(model.state_dict())
    single.update({f"text_encoders.t5base.transformer.{k}": v for k, v in t5_weights.items()})
    path = tmp_path / "comfy.safetensors"
    save_file({k: v.contiguous() for k, v in single.items()}, str(path))

    tokenizer_only = tmp_path / "tok"
    tokenizer_only.mkdir()
    build_test_tokenizer().save(str(tokenizer_only / "tokenizer.json"))
    shutil.copy(FIXTURES / "t5" / "relu" / "config.json", tokenizer_only / "config.json")
    with pytest.raises(InputError, match="tokenizer"):
        load_model(config, path)
    from_file = load_model(config, path, text_encoder=tokenizer_only)

    full_folder = tmp_path / "t5"
    shutil.copytree(FIXTURES / "t5" / "relu", full_folder)
    build_test_tokenizer().save(str(full_folder / "tokenizer.json"))
    save_checkpoint(model, tmp_path / "plain.safetensors")
    from_folder = load_model(config, tmp_path / "plain.safetensors", text_encoder=full_folder)
    run = lambda m: generate(m, "a b", seconds_total=0.01, steps=2, seed=3, decode=False).latents
    torch.testing.assert_close(run(from_file), run(from_folder), rtol=0, atol=0)


def test_a_training_run_folder_reads_as_its_latest_complete_checkpoint(tmp_path):
    from safetensors.torch import save_file
    from stable_audio_core.checkpoint import CheckpointError, read_state_dict, resolve_checkpoint
    for step, value in ((100, 1.0), (200, 2.0)):
        folder = tmp_path / "run" / "checkpoints" / f"step-{step:08d}"
        folder.mkdir(parents=True)
        save_file({"w": torch.full((2,), value)}, str(folder / "model.safetensors"))
    (tmp_path / "run" / "latest").write_text("checkpoints/step-00000100\n")
    assert read_state_dict(tmp_path / "run")["w"].tolist() == [1.0, 1.0]   # what latest names
    step_200 = tmp_path / "run" / "checkpoints" / "step-00000200"
    assert resolve_checkpoint(step_200) == step_200 / "model.safetensors"
    with pytest.raises(CheckpointError, match="neither a training run"):
        read_state_dict(tmp_path / "run" / "checkpoints")
