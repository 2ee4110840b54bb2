"""Write a first draft of each node's help page, nodes/web/docs/<class key>.md: what it does
(DESCRIPTION), its inputs and outputs (tooltips) and the example below. ComfyUI's frontend shows
/extensions/<pack>/docs/<class key>.md, from the pack's WEB_DIRECTORY, in the node's help panel.

    python tools/make_node_docs.py            # writes only the pages that do not exist yet
    python tools/make_node_docs.py --force    # rewrites every page

The committed pages may be edited by hand afterwards; tests/test_node_docs.py checks that every
node has one and that it names every input and output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "nodes" / "web" / "docs"

# One short, concrete use per node (class key without the prefix).
EXAMPLES = {
    "LoadCheckpoint": "Keep `bundled/default-small` to start without downloading anything (10 s "
                      "clips, CLAP prompts). For Stable Audio Open 1.0 put `model.safetensors` in "
                      "`models/checkpoints/` as `stable-audio-open-1.0.safetensors`, choose config "
                      "`bundled/stable_audio_open_1.0.json` and text encoder `t5-base`.",
    "T5Encode": "With Stable Audio Open: positive `128 BPM tech house drum loop, punchy kick`, "
                "negative `low quality, distorted`; connect `text` to Timing Condition.",
    "CLAPEncode": "With the bundled model: positive `warm piano chords, 90 BPM`, negative empty; "
                  "connect `text` to Timing Condition.",
    "TimingCondition": "Text to audio: seconds_total 8 with a 10 s model gives 8 s of sound; "
                       "connect its `seconds_total` output to Trim Silence. Continuation: connect "
                       "Latent Pad's `seconds_total` to this node's `seconds_total` input.",
    "EmptyLatentAudio": "Leave seconds at 0 to use the loaded model's window (10 s for the "
                        "bundled model, 47 s for Stable Audio Open 1.0); set batch_size 4 for "
                        "four variations in one run.",
    "DPMSolverSampler": "Leave steps 0, cfg -1 and sampler `default` to use the model's own "
                        "settings. For audio to audio connect VAE Encode's latent and set denoise "
                        "0.6; for inpainting connect a Noise Mask from Time Range latent with "
                        "denoise 1.",
    "VAEEncode": "Load Audio (ours or ComfyUI's) -> VAE Encode -> Latent Pad or Noise Mask from "
                 "Time Range -> the sampler.",
    "VAEDecode": "Sampler -> VAE Decode -> Trim Silence -> Save Audio. chunk_size 128 with "
                 "overlap 32 keeps memory flat for long clips; 0 decodes at once.",
    "TrimSilence": "Connect Timing Condition's `seconds_total` so an 8 s request in a 10 s window "
                   "is saved as exactly 8 s; leave it 0 to cut at the detected end.",
    "SaveAudio": "filename_prefix `audio/piano` writes `output/audio/piano_00001_.flac`; drop "
                 "the FLAC on ComfyUI to reopen the workflow that made it.",
    "LoadAudio": "Put `clip.wav` in ComfyUI's `input/` folder (or upload it with ComfyUI's own "
                 "Load Audio, whose output connects here too), choose it, and connect the model "
                 "so it arrives at the model's rate and channel count.",
    "LatentNoiseMask": "start 4, end 6, `regenerate range`: the sampler rewrites seconds 4 to 6 "
                       "of the encoded clip and keeps the rest.",
    "LatentCrop": "start 2, end 0 drops the first two seconds of a latent; end 0 means the end.",
    "LatentConcat": "Crop two latents and join them to rearrange a clip before decoding.",
    "LatentPad": "A 6 s clip, seconds 4, side `end`: a 10 s latent whose last 4 s the sampler "
                 "fills; its `seconds_total` output (10) goes to Timing Condition. A 9 s clip "
                 "on the bundled 10 s model gets about 1 s, with a warning.",
    "TrainDataset": "folder `data/songs` with a `.json` sidecar per file (description, genre, "
                    "bpm ...), window_seconds 10; connect to Pre-encode Latents or a trainer.",
    "TrainPreEncode": "Encode a dataset once with the VAE you trained, then train the diffusion "
                      "model on the latents (much faster per step).",
    "TrainVAE": "Training Dataset -> Train VAE with a vae model_config.json; the `checkpoint` "
                "output feeds Train Diffusion's pretransform_checkpoint.",
    "TrainCLAP": "Training Dataset -> Train CLAP; `clap_folder` feeds Train Diffusion's "
                 "text_encoder for a CLAP-conditioned model.",
    "TrainDiffusion": "Pre-encode Latents -> Train Diffusion with the VAE and CLAP from the "
                      "previous steps; lora_rank 16 with base_checkpoint fine-tunes a released model.",
    "TrainLoadModel": "Connect a trainer's `checkpoint` output and use the model in the "
                      "generation nodes to listen to the run so far.",
    "T5GemmaEncode": "With Stable Audio 3: positive `lo-fi hip hop beat, warm Rhodes chords, 85 BPM`, "
                     "negative empty; connect `text` to Timing Condition (seconds_total sets the length).",
    "SA3InpaintCondition": "Load a 10 s clip, mode `regenerate range`, start 4, end 6: the sampler "
                           "regenerates 4-6 s and keeps the rest; mode `extend source` with Timing's "
                           "seconds_total 20 continues the clip to 20 s.",
    "TrainEvaluate": "Point `generated` at a folder of your model's outputs and `reference` at held-out "
                     "clips (or a saved .npz of their statistics), choose `kl_passt,clap,timing` with "
                     "the weight files, queue: the report lands in `output/<name>/report.md`.",
    "LoadLoRA": "Put `my_style.safetensors` (a stable-audio-3 LoRA) in `models/loras/`, choose it at "
                "strength 0.8 between Load Checkpoint and the text encoder; chain a second Load LoRA "
                "to stack another.",
}


def _rows(spec: dict) -> list[str]:
    rows = []
    for category in ("required", "optional"):
        for name, entry in (spec.get(category) or {}).items():
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            kind = "choice" if isinstance(entry[0], list) else entry[0]
            extra = "" if category == "required" else " (optional)"
            rows.append(f"| `{name}` | {kind}{extra} | {options.get('tooltip', '')} |")
    return rows


def render(key: str, cls, display_name: str, prefix: str) -> str:
    short = key[len(prefix):]
    if short not in EXAMPLES:
        raise SystemExit(f"no example for {key}: add one to EXAMPLES in {Path(__file__).name}")
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None) or [""] * len(names)
    outputs = [f"| `{n}` | {t} | {tip} |" for n, t, tip in zip(names, cls.RETURN_TYPES, tooltips)]
    if not outputs:
        outputs = ["| (none) | | Saves files; the node shows them in the queue and its player. |"]
    lines = [f"# {display_name}", "", cls.DESCRIPTION, "",
             "## Inputs", "", "| Input | Type | What it does |", "|---|---|---|", *_rows(cls.INPUT_TYPES()), "",
             "## Outputs", "", "| Output | Type | What it is |", "|---|---|---|", *outputs, "",
             "## Example", "", EXAMPLES[short], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rewrite existing pages too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from stable_audio_host.pack import load_pack

    pack = load_pack(ROOT)
    prefix = "StableAudio_"
    DOCS.mkdir(parents=True, exist_ok=True)
    for key, cls in pack.classes.items():
        path = DOCS / f"{key}.md"
        if args.force or not path.exists():
            path.write_text(render(key, cls, pack.display_names[key], prefix))
            print(path)


if __name__ == "__main__":
    main()
