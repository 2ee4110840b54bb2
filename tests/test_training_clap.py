"""CLAP training: the symmetric contrastive loss, the learned temperature, the caption tokenizer,
per-item features, the Hugging Face folder export and the CLAP-score helpers, on a tiny CLAP and a
toy set of four sounds named by four captions."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from stable_audio_core.errors import ConfigError
from stable_audio_core.evaluation.clap_score import ClapScorer, retrieval_accuracy, score_gap
from stable_audio_core.models.clap import ClapModel
from stable_audio_core.text.conditioners import CLAPTextConditioner
from stable_audio_core.text.clap_encoder import ClapTextEncoder
from stable_audio_core.training.clap_task import build_clap_task, contrastive_loss, train_caption_tokenizer
from stable_audio_core.training.data import collate_items
from stable_audio_core.training.task import StepContext

CPU = StepContext(step=0, micro_batch=0, accumulation=1, device=torch.device("cpu"))
RATE = 16_000
CAPTIONS = ["low hum", "high whistle", "buzzing noise", "mid tone"]
PITCHES = [110.0, 2200.0, 0.0, 660.0]   # 0: white noise
# A tiny fused-free CLAP: 32-wide RoBERTa, 4-stage HTSAT on a 64 x 64 image, 16-wide joint space.
CONFIG = {
    "model_type": "clap", "projection_dim": 16,
    "text_config": {"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "intermediate_size": 64, "max_position_embeddings": 80},
    "audio_config": {"depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 2], "patch_embeds_hidden_size": 8,
                     "spec_size": 64, "window_size": 2, "mlp_ratio": 2.0, "enable_fusion": False},
}
OPTIONS = {"sample_rate": RATE, "captions": CAPTIONS * 3, "preprocessor": {"max_length_s": 0.5}}
# Same computation on both sides, float32: only summation order can differ.
FLOAT_TOL = 1e-5


class ToySounds:
    """Half-second stereo clips: a tone (or noise) per caption, random phase from the item seed."""

    def __len__(self) -> int:
        return 8

    def get(self, index: int, seed: int) -> dict:
        kind = index % 4
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(RATE // 2) / RATE
        if PITCHES[kind] == 0.0:
            wave = 0.3 * torch.randn(len(t), generator=g)
        else:
            wave = 0.5 * torch.sin(2 * math.pi * PITCHES[kind] * t + float(torch.rand((), generator=g)) * 6)
        return {"audio": torch.stack([wave, wave]), "padding_mask": torch.ones(len(t), dtype=torch.bool),
                "metadata": {"prompt": CAPTIONS[kind], "seconds_start": 0, "seconds_total": 1}}

    def collate(self, items, seeds):
        return collate_items(items, seeds)

    def prompts(self, seed: int = 0) -> list[str]:
        return [CAPTIONS[i % 4] for i in range(len(self))]


def toy_batch(first_seed: int = 0) -> dict:
    data = ToySounds()
    seeds = list(range(first_seed, first_seed + 4))
    return data.collate([data.get(i, s) for i, s in enumerate(seeds)], seeds)


def train(task, steps: int, lr: float = 1e-3, batch: dict | None = None) -> list[float]:
    """The task's losses over `steps` AdamW steps: on `batch` every step, or a new toy batch each."""
    phase = task.phases()[0]
    optimizer = torch.optim.AdamW(phase.parameters, lr=lr)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss, _ = phase.loss_fn(toy_batch(4 * step) if batch is None else batch, CPU)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_contrastive_loss_is_cross_entropy_in_both_directions():
    model = ClapModel.from_config(CONFIG)
    with torch.no_grad():
        model.logit_scale_t.fill_(math.log(10.0))
        model.logit_scale_a.fill_(math.log(10.0))
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(5, 16, generator=g), dim=-1)
    audio = F.normalize(torch.randn(5, 16, generator=g), dim=-1)
    loss, logs = contrastive_loss(model, text, audio)
    logits = 10.0 * text @ audio.t()
    labels = torch.arange(5)
    by_hand = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # Symmetric: exchanging the two modalities leaves the loss unchanged.
    assert contrastive_loss(model, audio, text)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    assert logs["text_to_audio"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_temperature_starts_at_0_07_and_is_clamped_like_clap():
    task = build_clap_task(CONFIG, OPTIONS)
    assert task.model.logit_scale_t.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        task.model.logit_scale_t.fill_(9.0)
        task.model.logit_scale_a.fill_(-1.0)
    task.loss(toy_batch(), CPU)
    assert task.model.logit_scale_t.item() == pytest.approx(math.log(100.0))
    assert task.model.logit_scale_a.item() == 0.0


def test_caption_tokenizer_is_deterministic_and_framed_like_roberta():
    captions = CAPTIONS * 3 + ["a dog barking far away", "rain on a tin roof"]
    shuffled = list(captions)
    random.Random(1).shuffle(shuffled)
    first = train_caption_tokenizer(captions, 300)
    assert first.to_str() == train_caption_tokenizer(shuffled, 300).to_str()
    ids = first.encode("low hum").ids
    assert ids[0] == 0 and ids[-1] == 2 and first.token_to_id("<pad>") == 1
    assert first.get_vocab_size() <= 300


def test_task_takes_captions_from_the_dataset_and_checks_its_options():
    task = build_clap_task(CONFIG, {"sample_rate": RATE, "dataset": ToySounds()})
    assert task.tokenizer.backend.encode("buzzing").tokens[0] != "<unk>"
    with pytest.raises(ConfigError, match="sample_rate"):
        build_clap_task(CONFIG, {"captions": CAPTIONS})
    with pytest.raises(ConfigError, match="tokenizer"):
        build_clap_task(CONFIG, {"sample_rate": RATE})
    with pytest.raises(ConfigError, match="unknown CLAP training option"):
        build_clap_task(CONFIG, dict(OPTIONS, lr=1))


def test_embeddings_of_an_item_do_not_depend_on_its_batch():
    task = build_clap_task(CONFIG, OPTIONS)
    batch = toy_batch()
    text, audio = task.embeddings(batch, "cpu")
    halves = [task.embeddings({k: v[i:i + 2] for k, v in batch.items()}, "cpu") for i in (0, 2)]
    assert torch.allclose(torch.cat([h[0] for h in halves]), text, atol=FLOAT_TOL)
    assert torch.allclose(torch.cat([h[1] for h in halves]), audio, atol=FLOAT_TOL)


def test_the_loss_falls_at_every_step_while_fitting_one_batch():
    task = build_clap_task(CONFIG, OPTIONS)
    # A small learning rate on one batch descends smoothly (measured: 1.51 -> 1.36 in six steps,
    # each step at least 0.015 lower); larger rates first jump above chance.
    losses = train(task, 6, lr=3e-4, batch=toy_batch())
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < losses[0] - 0.1


@pytest.mark.heavy
def test_loss_decreases_on_the_toy_set():
    task = build_clap_task(CONFIG, OPTIONS)
    losses = train(task, 30)
    # Four pairs: chance is log 4 = 1.39 per direction. Measured: mean of the first 5 steps 1.76,
    # of the last 5 (steps 25-29) 0.79.
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_export_is_a_hugging_face_folder_our_loaders_read(tmp_path):
    task = build_clap_task(CONFIG, OPTIONS)
    train(task, 2)
    folder = task.save_pretrained(tmp_path / "clap")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json"} <= names
    loaded = ClapModel.from_pretrained(folder)
    for key, value in task.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    batch = toy_batch()
    text, audio = task.embeddings(batch, "cpu")
    scorer = ClapScorer.from_folder(folder)
    assert torch.allclose(scorer.text_embeddings(CAPTIONS), text, atol=FLOAT_TOL)
    assert scorer.extractor.max_length == 24_000   # 0.5 s at 48 kHz, from preprocessor_config.json

    encoder = ClapTextEncoder.from_folder(folder)
    conditioner = CLAPTextConditioner(8, use_text_features=True, feature_layer_ix=-2, text_width=32, embedding_dim=16)
    conditioner.attach_text_encoder(encoder)
    tokens, mask = conditioner(["low hum", "mid tone"], "cpu")
    assert tokens.shape == (2, 77, 8) and mask[:, :4].all() and not mask[:, 5:].any()

    # export() + export_files() (what a trainer checkpoint can hold) make the same folder.
    from safetensors.torch import save_file
    weights, config = task.export()
    assert config == json.loads((folder / "config.json").read_text())
    trainer_folder = tmp_path / "checkpoint"
    trainer_folder.mkdir()
    save_file(weights, str(trainer_folder / "model.safetensors"))
    for name, data in task.export_files().items():
        (trainer_folder / name).write_bytes(data)
    assert torch.allclose(ClapScorer.from_folder(trainer_folder).text_embeddings(CAPTIONS), text, atol=FLOAT_TOL)

    again = build_clap_task(str(folder), {"sample_rate": RATE})
    assert again.tokenizer_json == task.tokenizer_json
    assert torch.allclose(again.embeddings(batch, "cpu")[1], audio, atol=FLOAT_TOL)


def test_clap_score_helpers_report_matched_similarity_and_retrieval():
    text = torch.eye(3, 4)
    audio = torch.tensor([[1.0, 0.1, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0.2, 0]])
    # Every text finds its clip; clip 2 is closer to text 0 than to its own text.
    ranks = retrieval_accuracy(text, audio)
    assert ranks["text_to_audio"] == 1.0 and ranks["audio_to_text"] == pytest.approx(2 / 3)
    assert retrieval_accuracy(text, audio, k=2)["audio_to_text"] == 1.0
    gap = score_gap(text, text)
    assert gap == {"matched": 1.0, "mismatched": 0.0, "gap": 1.0}


def test_trainer_runs_clap_steps(tmp_path):
    trainer = pytest.importorskip("stable_audio_core.training.trainer")
    task = build_clap_task(CONFIG, {"sample_rate": RATE, "dataset": ToySounds(), "preprocessor": {"max_length_s": 0.5}})
    config = trainer.TrainerConfig(out_dir=tmp_path / "run", max_steps=2, batch_size=4, learning_rate=1e-3,
                                   checkpoint_every=2, log_every=1, ema_decay=None, device="cpu")
    summary = trainer.train(task, ToySounds(), config, progress=False)
    assert summary.step == 2 and (summary.checkpoint / "model.safetensors").is_file()
    # The checkpoint folder is a Hugging Face CLAP folder (task.export_files) our loader reads.
    assert ClapScorer.from_folder(summary.checkpoint).text_embeddings(CAPTIONS).shape == (4, 16)


@pytest.mark.heavy
def test_clap_learns_the_toy_pairs_over_a_short_run(capsys):
    task = build_clap_task(CONFIG, OPTIONS)
    losses = train(task, 150)
    text, audio = task.embeddings(toy_batch(10_000), "cpu")
    accuracy = retrieval_accuracy(text, audio)
    with capsys.disabled():
        print(f"\nCLAP toy run: mean loss of the first 10 steps {sum(losses[:10]) / 10:.4f}, of the last 10 "
              f"{sum(losses[-10:]) / 10:.4f}; held-out retrieval {accuracy}; gap {score_gap(text, audio)}")
    assert sum(losses[-10:]) / 10 < 0.2 * sum(losses[:10]) / 10
    assert accuracy["text_to_audio"] == 1.0


# --- torchrun: two processes equal one (script mode below) ---------------------------------------

def run_tiny_training(out_dir, steps: int = 3):
    from stable_audio_core.training.trainer import TrainerConfig, train
    task = build_clap_task(CONFIG, OPTIONS)
    config = TrainerConfig(out_dir=out_dir, max_steps=steps, batch_size=4, learning_rate=1e-3,
                           checkpoint_every=steps, log_every=1, ema_decay=None, device="cpu")
    return train(task, ToySounds(), config, progress=False)


@pytest.mark.heavy
def test_torchrun_two_processes_gather_the_negatives_and_train_the_same_weights(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    from stable_audio_core.training import state
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not found beside the Python running the tests")
    run_tiny_training(tmp_path / "one")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", __file__, str(tmp_path / "two")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (torch.load(state.read_latest(tmp_path / n) / state.STATE_FILE, weights_only=True)["modules"]["clap"]
                for n in ("one", "two"))
    errors = sorted(float((one[k].float() - two[k].float()).abs().max()) for k in one)
    median, worst = errors[len(errors) // 2], errors[-1]
    print(f"\nCLAP, 1 vs 2 processes after 3 steps: max |weight difference| per tensor: median "
          f"{median:.2e}, largest {worst:.2e}")
    # Gathering makes each process's loss the global batch's; only float summation order differs.
    # Measured: median 7.8e-8; with per-process negatives instead, median 2.5e-3. The largest
    # differences (6e-5) are attention key biases, whose exact gradient is zero (softmax ignores a
    # shift shared by all keys): AdamW turns their rounding noise into steps of up to lr.
    assert median < 1e-6 and worst < 3e-4


if __name__ == "__main__":
    import os
    import sys
    from pathlib import Path
    torch.set_num_threads(1 if "LOCAL_RANK" in os.environ else 2)
    run_tiny_training(Path(sys.argv[1]))
