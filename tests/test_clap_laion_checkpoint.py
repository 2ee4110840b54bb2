"""laion_clap's own checkpoint files (630k-audioset-fusion-best.pt) load into our CLAP towers.

tests/fixtures/clap/laion_fused.pt is the tiny fused CLAP of tests/fixtures/clap/model/ renamed
into laion_clap's layout by tools/make_laion_clap_fixture.py (transformers venv), wrapped as the
real files are ({"state_dict": {"module.<key>": tensor}}). Loading it must give the very tensors,
and so the very embeddings, that loading the Hugging Face folder gives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from fixture_inputs import audio_test_features, sample_clip
from stable_audio_core.errors import CheckpointError, InputError
from stable_audio_core.evaluation.clap_score import ClapScorer
from stable_audio_core.models.clap import ClapModel
from stable_audio_core.models.clap_config import ClapConfig

FIXTURES = Path(__file__).parent / "fixtures" / "clap"
FOLDER = FIXTURES / "model"
LAION_FILE = FIXTURES / "laion_fused.pt"


def tiny_config() -> ClapConfig:
    return ClapConfig.from_json_file(FOLDER / "config.json")


def laion_state() -> dict[str, torch.Tensor]:
    return torch.load(LAION_FILE, weights_only=True)["state_dict"]


def test_laion_checkpoint_gives_the_hf_folders_embeddings():
    from_folder = ClapModel.from_pretrained(FOLDER)
    from_laion = ClapModel.from_laion_checkpoint(LAION_FILE, tiny_config())
    ids = torch.tensor([[0, 5, 9, 17, 2, 1, 1], [0, 40, 2, 1, 1, 1, 1]])
    mask = ids != 1
    features = audio_test_features(2, 4)
    is_longer = torch.tensor([True, False])  # the fused path and the plain one

    with torch.no_grad():
        text = (from_folder.text_embedding(ids, mask), from_laion.text_embedding(ids, mask))
        audio = (from_folder.audio_embedding(features, is_longer), from_laion.audio_embedding(features, is_longer))

    # Same tensors through the same code: bit-identical.
    assert torch.equal(*text)
    assert torch.equal(*audio)


def test_flat_state_dict_and_laion_only_keys_are_accepted(tmp_path):
    state = {key.removeprefix("module."): value for key, value in laion_state().items()}
    # What real checkpoints also hold: the front end, the AudioSet head, the window masks.
    state["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(3, 1, 4)
    state["audio_branch.logmel_extractor.melW"] = torch.zeros(4, 2)
    state["audio_branch.tscam_conv.weight"] = torch.zeros(5, 32, 2, 3)
    state["audio_branch.head.weight"] = torch.zeros(5, 5)
    state["audio_branch.layers.0.blocks.1.attn_mask"] = torch.zeros(2, 4, 4)
    path = tmp_path / "flat.pt"
    torch.save(state, path)

    model = ClapModel.from_laion_checkpoint(path, tiny_config())

    reference = ClapModel.from_pretrained(FOLDER).state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())


def test_unfused_checkpoint_with_the_fused_config_names_the_missing_fusion_branch(tmp_path):
    state = {k: v for k, v in laion_state().items() if ".fusion_model." not in k and ".mel_conv2d." not in k}
    path = tmp_path / "630k-audioset-best.pt"
    torch.save({"state_dict": state}, path)

    with pytest.raises(CheckpointError, match=r"630k-audioset-best\.pt.*missing keys: .*fusion_model.*enable_fusion"):
        ClapModel.from_laion_checkpoint(path, tiny_config())


def test_wrong_files_are_refused_with_where_to_get_the_right_one(tmp_path):
    not_clap = tmp_path / "passt.pt"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(2)}}, not_clap)
    with pytest.raises(CheckpointError, match=r"passt\.pt does not hold a state dict of tensors.*lukewys/laion_clap"):
        ClapModel.from_laion_checkpoint(not_clap)

    other_weights = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, other_weights)
    with pytest.raises(CheckpointError, match=r"not a LAION CLAP checkpoint .*lukewys/laion_clap"):
        ClapModel.from_laion_checkpoint(other_weights)

    with_objects = tmp_path / "pickled.pt"
    # Training arguments pickled beside the weights: not loadable with weights_only=True.
    torch.save({"state_dict": laion_state(), "args": argparse.Namespace(lr=1e-4)}, with_objects)
    with pytest.raises(CheckpointError, match=r"pickled\.pt.*weights_only=True"):
        ClapModel.from_laion_checkpoint(with_objects)

    with pytest.raises(CheckpointError, match=r"missing\.pt not found; download it from .*lukewys/laion_clap"):
        ClapModel.from_laion_checkpoint(tmp_path / "missing.pt")


def test_scorer_loads_a_laion_file_with_robertas_tokenizer_and_scores_like_the_folder():
    clip = sample_clip(30_000)

    folder_scorer = ClapScorer.load(FOLDER)
    laion_scorer = ClapScorer.load(LAION_FILE, tokenizer=FOLDER / "tokenizer.json", config=tiny_config())

    texts = ["a dog barks in the rain"]
    assert torch.equal(folder_scorer.scores(texts, [clip], 48_000), laion_scorer.scores(texts, [clip], 48_000))


def test_scorer_asks_for_the_tokenizer_a_laion_file_lacks():
    with pytest.raises(InputError, match=r"laion_fused\.pt is a LAION checkpoint file, which has no tokenizer.*roberta-base"):
        ClapScorer.load(LAION_FILE)
