"""Stable Audio 3 from the command line and the core's LoRA wiring: `stable-audio-toolkit generate` runs an
SA3 checkpoint with its defaults, stacked --lora files and --inpaint ranges; `merge-lora` writes a
plain checkpoint that gives the runtime LoRAs' output; wrong requests fail before any work."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from helpers import SA3_SAMPLE_RATE, add_sa3_model, write_clip, write_sa3_lora
from stable_audio_core.factory import load_model
from stable_audio_core.lora import applied_loras, load_loras, model_with_loras
from stable_audio_core.pipeline import generate
from stable_audio_host.cli import main as cli_main


@pytest.fixture(scope="module")
def sa3(tmp_path_factory):
    root = tmp_path_factory.mktemp("sa3_cli")
    files = add_sa3_model(root / "models")
    model = load_model(files["config"], files["checkpoint"], text_encoder=files["text_encoder"])
    files["loras"] = [write_sa3_lora(root / f"lora_{i}.safetensors", model, seed=i) for i in range(2)]
    files["clip"] = write_clip(root / "clip.wav", 2.0, rate=SA3_SAMPLE_RATE, channels=2)
    return files


def model_args(files) -> list[str]:
    return ["--config", str(files["config"]), "--checkpoint", str(files["checkpoint"]),
            "--text-encoder", str(files["text_encoder"])]


def plain(files):
    return load_model(files["config"], files["checkpoint"], text_encoder=files["text_encoder"])


def latents(model, **options) -> torch.Tensor:
    return generate(model, "warm pad", duration=1.0, steps=2, seed=7, decode=False, **options).latents


def test_generate_runs_sa3_with_stacked_loras_and_an_inpaint_range(sa3, tmp_path):
    out = tmp_path / "inpainted.wav"
    code = cli_main(["generate", "warm pad", "--seconds", "2.0", "--steps", "2", "--seed", "3",
                     "--init-audio", str(sa3["clip"]), "--inpaint", "0.5:1.5",
                     "--lora", f"{sa3['loras'][0]}:0.7", "--lora", str(sa3["loras"][1]), "-o", str(out),
                     *model_args(sa3)])
    assert code == 0
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (SA3_SAMPLE_RATE, 2, 2 * SA3_SAMPLE_RATE)


def test_generate_extends_a_clip_to_a_longer_duration_with_an_open_range(sa3, tmp_path):
    out = tmp_path / "extended.wav"
    code = cli_main(["generate", "warm pad", "--seconds", "3.0", "--steps", "2", "--init-audio", str(sa3["clip"]),
                     "--inpaint", "2.0:", "-o", str(out), *model_args(sa3)])
    assert code == 0
    assert sf.info(str(out)).frames == 3 * SA3_SAMPLE_RATE


@pytest.mark.parametrize("extra,message", [
    (["--inpaint", "1:2"], "--init-audio"),
    (["--inpaint", "2:1", "--init-audio", "CLIP"], "START:END"),
    (["--lora", "missing.safetensors"], "not found"),
])
def test_bad_sa3_requests_fail_before_loading_the_model(sa3, capsys, extra, message):
    extra = [str(sa3["clip"]) if item == "CLIP" else item for item in extra]
    assert cli_main(["generate", "x", "--seconds", "1", *extra, *model_args(sa3)]) == 2
    err = capsys.readouterr().err
    assert message in err and "loaded model" not in err


def test_loras_given_to_a_non_sa3_model_are_refused(capsys, sa3):
    assert cli_main(["generate", "x", "--lora", str(sa3["loras"][0])]) == 2
    assert "Stable Audio 3" in capsys.readouterr().err


def test_merged_checkpoint_gives_the_runtime_lora_output(sa3, tmp_path):
    specs = [(str(sa3["loras"][0]), 0.7), (str(sa3["loras"][1]), 1.0)]
    runtime = plain(sa3)
    load_loras(runtime, specs)
    out = tmp_path / "merged.safetensors"

    code = cli_main(["merge-lora", "--config", str(sa3["config"]), "--checkpoint", str(sa3["checkpoint"]),
                     "--lora", f"{specs[0][0]}:0.7", "--lora", specs[1][0], "-o", str(out)])

    assert code == 0
    with safe_open(str(sa3["checkpoint"]), "pt") as original, safe_open(str(out), "pt") as merged:
        assert sorted(merged.keys()) == sorted(original.keys())  # the reference's plain layout
    merged_model = load_model(sa3["config"], out, text_encoder=sa3["text_encoder"])
    expected = latents(runtime)
    # The merged weights are the runtime's adapted weights computed once; float32 rounding of
    # W + s * B @ A and of the two paths' matmuls stays far below 1e-5 of the latents' scale.
    assert (latents(merged_model) - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert (latents(plain(sa3)) - expected).abs().max() > 1e-2  # and the LoRAs really act


def test_merged_checkpoint_keeps_the_dtypes_its_source_stores(sa3, tmp_path):
    from safetensors.torch import load_file, save_file

    source = load_file(str(sa3["checkpoint"]))
    half = {key: value.bfloat16() if value.is_floating_point() else value for key, value in source.items()}
    stored = tmp_path / "bf16.safetensors"
    save_file(half, str(stored))
    args = ["merge-lora", "--config", str(sa3["config"]), "--checkpoint", str(stored),
            "--lora", f"{sa3['loras'][0]}:0.7"]
    assert cli_main([*args, "-o", str(tmp_path / "stored.safetensors")]) == 0
    assert cli_main([*args, "-o", str(tmp_path / "wide.safetensors"), "--dtype", "float32"]) == 0
    merged, wide = (load_file(str(tmp_path / name)) for name in ("stored.safetensors", "wide.safetensors"))
    assert {key: value.dtype for key, value in merged.items()} == {key: value.dtype for key, value in half.items()}
    assert all(value.dtype == torch.float32 for value in wide.values() if value.is_floating_point())
    # The LoRAs fold in float32, then each tensor is rounded once to its stored dtype.
    assert all(torch.equal(merged[key], wide[key].to(merged[key].dtype)) for key in merged)
    adapted = [key for key in merged if not torch.equal(merged[key], half[key])]
    assert adapted and all(".transformer.layers." in key or "seconds_total" in key for key in adapted)


def test_chained_model_with_loras_stacks_and_leaves_its_input_unchanged(sa3):
    base = plain(sa3)
    before = latents(base)
    first = model_with_loras(base, [(sa3["loras"][0], 0.7)])
    chained = model_with_loras(first, [(sa3["loras"][1], 1.0)])
    in_place = plain(sa3)
    load_loras(in_place, [(sa3["loras"][0], 0.7), (sa3["loras"][1], 1.0)])

    assert applied_loras(base.backbone) is None and torch.equal(latents(base), before)
    assert chained.autoencoder is base.autoencoder  # shared, not copied
    assert torch.equal(latents(chained), latents(in_place))
    assert len(applied_loras(first.backbone)) == 1
