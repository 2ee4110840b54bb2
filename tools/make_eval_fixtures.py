"""Write tests/fixtures/eval/*: OpenL3 and PaSST outputs from the reference packages with random weights.

Run in a reference environment (never the project's), e.g.:
    python3 -m venv /tmp/metrics-ref && /tmp/metrics-ref/bin/pip install torch==2.13.0
    /tmp/metrics-ref/bin/pip install -c <(echo torch==2.13.0) torchopenl3 hear21passt librosa scipy safetensors
    PYTHONPATH=<stubs> /tmp/metrics-ref/bin/python tools/make_eval_fixtures.py
where <stubs> holds a torchaudio stand-in (torchaudio wheels do not load with torch 2.13: the
reference-env stub plus torchaudio's pure-Python compliance/kaldi.py and no-op Frequency/TimeMasking)
and a timm stand-in exposing timm.models._hub.download_cached_file (timm 1.x needs torchvision).

Weights are not stored: both sides fill every tensor from one seed in sorted key order
(``deterministic_weights``, repeated in tests/test_eval_networks.py), and inputs are drawn from seeds.
OpenL3's reference is torchopenl3's network body fed openl3 0.4.2's kapre front end, computed here
with NumPy and librosa (torchopenl3's own front end is kapre 0.1.4's). PaSST's is hear21passt's
AugmentMelSTFT and PaSST class (2 blocks instead of 12: the blocks are identical).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import librosa
import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the weights are drawn by the same code as the tests'

from fixture_inputs import deterministic_weights  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "eval"
PASST_TEST_DEPTH = 2


def kapre_v03_mel256(audio: np.ndarray) -> np.ndarray:
    """openl3 0.4.2's front end: [B, 48000] -> [B, 1, 256, 199] (tf.signal.stft pad_end, |.|, mel, dB)."""
    n_fft, hop = 2048, 242
    frames = math.ceil(audio.shape[-1] / hop)
    padded = np.pad(audio.astype(np.float64), ((0, 0), (0, (frames - 1) * hop + n_fft - audio.shape[-1])))
    window = librosa.filters.get_window("hann", n_fft, fftbins=True)
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None]
    mag = np.abs(np.fft.rfft(padded[:, idx] * window, axis=-1)).astype(np.float32)
    mel = mag @ librosa.filters.mel(sr=48000, n_fft=n_fft, n_mels=256, fmin=0.0, fmax=24000, htk=False,
                                    norm="slaney").T.astype(np.float32)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db - db.max(axis=(1, 2), keepdims=True), -80.0)
    return db.transpose(0, 2, 1)[:, None].astype(np.float32)


def openl3_fixture() -> dict[str, torch.Tensor]:
    from torchopenl3.models import PytorchOpenl3

    model = PytorchOpenl3(input_repr="mel256", content_type="music", embedding_size=512).eval()
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("speclayer.")}
    model.load_state_dict(deterministic_weights(body, seed=11), strict=False)
    audio = 0.1 * torch.randn(2, 48000, generator=torch.Generator().manual_seed(12))
    spec = torch.from_numpy(kapre_v03_mel256(audio.numpy()))

    class GivenSpectrogram(torch.nn.Module):
        def forward(self, x):  # torchopenl3 expects [B, 256, T, 1] from its speclayer
            return spec[:, 0, :, :, None]

    model.speclayer = GivenSpectrogram()
    with torch.no_grad():
        embedding = model(audio[:, None])
    return {"openl3_spectrogram_row0": spec[0, 0, :, :8].contiguous(), "openl3_embedding": embedding}


def passt_fixture() -> dict[str, torch.Tensor]:
    from hear21passt.models.passt import PaSST
    from hear21passt.models.preprocess import AugmentMelSTFT

    mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                         htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000).eval()
    net = PaSST(img_size=(128, 998), patch_size=16, stride=(10, 10), in_chans=1, num_classes=527, embed_dim=768,
                depth=PASST_TEST_DEPTH, num_heads=12, distilled=True).eval()
    net.load_state_dict(deterministic_weights(net.state_dict(), seed=21))
    audio = 0.1 * torch.randn(2, 64000, generator=torch.Generator().manual_seed(22))
    with torch.no_grad():
        mels = mel(audio)
        logits, _ = net(mels[:, None])
    return {"passt_mels": mels[0, :, :40].contiguous(), "passt_logits": logits}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    tensors = {**openl3_fixture(), **passt_fixture()}
    save_file(tensors, str(OUT / "networks.safetensors"))
    print({k: tuple(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
