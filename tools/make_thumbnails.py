"""Render the Templates browser's thumbnails: workflows/<name>.jpg, the spectrogram of what the
workflow makes, beside each UI workflow.

    python tools/make_thumbnails.py            # needs matplotlib (the dev extra)

The bundled-model workflows run as shipped on the bundled model (text_to_audio's output is the
clip the others load; audio_to_audio and inpaint get its length as seconds_total). The sao_* and
sa3_* workflows need Stable Audio Open's or Stable Audio 3's weights, which are not in the
repository: their thumbnail is the output of the bundled graph that does the same job.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
SIZE_INCHES, DPI = (4.0, 3.0), 80   # 320 x 240 pixels
MAX_BYTES = 60_000                  # the Templates browser loads every thumbnail at once
SAME_JOB = {"extend": "continuation", "lora": "text_to_audio"}  # sa3_* graphs named apart
# The Templates browser titles a pack's template by its file name only: the picture says what the
# workflow does and for which model.
JOBS = {"text_to_audio": "Text → audio", "audio_to_audio": "Audio → audio", "inpaint": "Inpaint",
        "continuation": "Continuation", "extend": "Extend", "lora": "Text → audio + LoRA"}
MODELS = {"sa3_": "Stable Audio 3", "sao_": "Stable Audio Open 1.0", "": "Bundled model"}


def thumbnail_title(name: str) -> tuple[str, str]:
    """(job, model) written on the thumbnail of workflow `name`."""
    prefix = next(p for p in MODELS if name.startswith(p))
    return JOBS[name.removeprefix(prefix)], MODELS[prefix]


def bundled_counterpart(name: str) -> str:
    """The bundled-model workflow that does the job of `name` (itself for a bundled one)."""
    for prefix in ("sao_", "sa3_"):
        name = name.removeprefix(prefix)
    return SAME_JOB.get(name, name)


def spectrogram_db(audio: np.ndarray, rate: int, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """Mono magnitude spectrogram in dB [freq, time] of `audio` [C, T], up to 16 kHz."""
    mono = audio.mean(axis=0)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(mono, (0, n_fft)), n_fft)[::hop]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)).T
    keep = int(16000 / rate * n_fft)
    return 20 * np.log10(spectrum[:keep] + 1e-5)


def write_thumbnail(audio: np.ndarray, rate: int, title: tuple[str, str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    db = spectrogram_db(audio, rate)
    figure = plt.figure(figsize=SIZE_INCHES, dpi=DPI)
    axes = figure.add_axes([0, 0, 1, 1])
    seconds = audio.shape[-1] / rate
    axes.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                extent=[0, seconds, 0, 16])
    axes.set_axis_off()
    job, model = title
    axes.text(0.03, 0.95, job, transform=axes.transAxes, color="white", fontsize=13, va="top",
              fontweight="bold")
    axes.text(0.03, 0.83, model, transform=axes.transAxes, color="white", fontsize=10, va="top")
    axes.text(0.97, 0.04, f"{seconds:.1f} s", transform=axes.transAxes, color="white", fontsize=10,
              ha="right")
    figure.savefig(path, dpi=DPI, pil_kwargs={"quality": 80, "optimize": True})
    plt.close(figure)
    if path.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{path} is {path.stat().st_size} bytes; keep thumbnails under {MAX_BYTES}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: as shipped)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import soundfile as sf
    from stable_audio_host.runtime import Folders
    from stable_audio_host.session import Session

    names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    order = sorted(names, key=lambda n: ("text_to_audio" not in n, n))  # the clip comes first
    with tempfile.TemporaryDirectory() as scratch:
        folders = {k: Path(scratch) / k for k in ("models", "input", "output")}
        for folder in folders.values():
            folder.mkdir()
        session = Session(Folders(**folders), device="cpu", pack_folder=ROOT)
        sets = [] if args.steps is None else [f"StableAudio_DPMSolverSampler.steps={args.steps}"]
        spectra = {}   # bundled workflow -> (audio [C, T], rate)
        clip_seconds = None
        for name in order:
            bundled = bundled_counterpart(name)
            if bundled not in spectra:
                # As the notes say: audio to audio and inpaint keep the clip's length.
                keep = [f"StableAudio_TimingCondition.seconds_total={clip_seconds}"] \
                    if bundled in ("audio_to_audio", "inpaint") else []
                result = session.run_file(WORKFLOWS / f"{bundled}.json", sets + keep)
                saved = session.saved_files(result)[0]
                audio, rate = sf.read(str(saved), always_2d=True)
                spectra[bundled] = (audio.T, rate)
                if bundled == "text_to_audio":
                    sf.write(str(folders["input"] / "clip.wav"), audio, rate)
                    clip_seconds = len(audio) / rate
            write_thumbnail(*spectra[bundled], thumbnail_title(name), WORKFLOWS / f"{name}.jpg")
            print(WORKFLOWS / f"{name}.jpg", (WORKFLOWS / f"{name}.jpg").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
