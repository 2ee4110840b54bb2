"""OpenL3 and PaSST parity with the reference packages (torchopenl3's network body on openl3 0.4.2's
front end; hear21passt's front end and PaSST) on random weights, and the weight-file errors.
Fixtures: tools/make_eval_fixtures.py (weights regenerated here from the same seed; inputs too)."""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fixture_inputs import deterministic_weights
from stable_audio_core.errors import CheckpointError
from stable_audio_core.evaluation.openl3 import OpenL3, load_openl3
from stable_audio_core.evaluation.passt import PaSST, load_passt

FIXTURES = load_file(str(Path(__file__).parent / "fixtures" / "eval" / "networks.safetensors"))
PASST_TEST_DEPTH = 2  # the fixture's reference has 2 of the 12 identical blocks




def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def test_openl3_matches_torchopenl3_body_on_openl3_0_4_2_front_end():
    model = OpenL3().eval()
    model.load_state_dict(deterministic_weights(model.state_dict(), seed=11))
    audio = 0.1 * torch.randn(2, 48000, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        spec = model.frontend(audio)
        embedding = model(audio)
    # float32 mel products on both sides, decibels of size O(10): 1e-4 dB absolute (measured 2e-6)
    assert torch.allclose(spec[0, 0, :, :8], FIXTURES["openl3_spectrogram_row0"], atol=1e-4, rtol=0)
    assert relative_error(embedding, FIXTURES["openl3_embedding"]) < 1e-4  # the tolerance


def test_passt_matches_hear21passt_mels_and_logits():
    model = PaSST(depth=PASST_TEST_DEPTH).eval()
    model.load_state_dict(deterministic_weights(model.state_dict(), seed=21))
    audio = 0.1 * torch.randn(2, 64000, generator=torch.Generator().manual_seed(22))
    with torch.no_grad():
        mels = model.frontend(audio)
        logits = model.logits(audio)
    assert relative_error(mels[0, :, :40], FIXTURES["passt_mels"]) < 1e-5
    assert relative_error(logits, FIXTURES["passt_logits"]) < 1e-4  # the tolerance


def test_passt_accepts_short_inputs_by_cutting_time_position_embeddings():
    model = PaSST(depth=1).eval()
    with torch.no_grad():
        logits = model.logits(torch.zeros(1, int(0.4 * 32000)))  # the reference's unpadded short tail
    assert logits.shape == (1, 527)


def test_openl3_loads_torchopenl3_state_dict_and_ignores_its_front_end(tmp_path):
    state = deterministic_weights(OpenL3().state_dict(), seed=3)
    state["speclayer.mel_basis"] = torch.zeros(256, 1025)
    torch.save(state, tmp_path / "torchopenl3_mel256_music_512.pth.tar")
    model = load_openl3(tmp_path / "torchopenl3_mel256_music_512.pth.tar")
    assert torch.equal(model.conv2d_1.weight, state["conv2d_1.weight"])


def test_openl3_reads_keras_h5_weights(tmp_path):
    h5py = pytest.importorskip("h5py")
    import numpy as np
    state = deterministic_weights(OpenL3().state_dict(), seed=4)
    with h5py.File(tmp_path / "openl3_audio_mel256_music.h5", "w") as f:
        names = []
        for i in range(1, 9):
            conv = "audio_embedding_layer" if i == 8 else f"conv2d_{i}"
            for layer, weights in ((f"batch_normalization_{i}", {
                "gamma": state[f"batch_normalization_{i}.weight"], "beta": state[f"batch_normalization_{i}.bias"],
                "moving_mean": state[f"batch_normalization_{i}.running_mean"],
                "moving_variance": state[f"batch_normalization_{i}.running_var"]}),
                    (conv, {"kernel": state[f"{conv}.weight"].permute(2, 3, 1, 0), "bias": state[f"{conv}.bias"]})):
                group = f.create_group(layer)
                group.attrs["weight_names"] = [f"{layer}/{k}:0".encode() for k in weights]
                for k, v in weights.items():
                    group.create_dataset(f"{layer}/{k}:0", data=np.ascontiguousarray(v.numpy()))
                names.append(layer.encode())
        f.attrs["layer_names"] = names
    model = load_openl3(tmp_path / "openl3_audio_mel256_music.h5")
    assert torch.equal(model.audio_embedding_layer.weight, state["audio_embedding_layer.weight"])
    assert torch.equal(model.batch_normalization_8.running_var, state["batch_normalization_8.running_var"])


def test_missing_or_wrong_weight_files_name_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(CheckpointError, match=r"openl3_audio_mel256_music\.h5.*PyPI"):
        load_openl3(tmp_path / "openl3_audio_mel256_music.h5")
    with pytest.raises(CheckpointError, match=r"passt\.pt.*passt-s-f128-p16-s10-ap\.476-swa\.pt"):
        load_passt(tmp_path / "passt.pt")
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"wrong\.pt is not a PaSST.*missing"):
        load_passt(tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"wrong\.pt is not an OpenL3"):
        load_openl3(tmp_path / "wrong.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"could not read .*garbage\.pt"):
        load_passt(tmp_path / "garbage.pt")
