"""The evaluation node: the paper's metrics (FD_openl3, KL_passt, CLAP score, timing) of a folder of
generations, through stable_audio_core.evaluation.suite as `stable-audio-toolkit eval` runs it."""

from __future__ import annotations

import json

from ...stable_audio_core.errors import InputError
from ...stable_audio_core.evaluation import suite
from .. import hooks
from .common import CATEGORY, DEVICES, device_choice, existing_path, optional_path, output_folder


def metric_list(text: str) -> list[str]:
    metrics = [m.strip() for m in (text or "").split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(suite.METRICS))
    if unknown or not metrics:
        raise InputError(f"metrics {metrics or text!r}: choose a comma-separated list from {', '.join(suite.METRICS)}")
    return metrics


class TrainEvaluate:
    DESCRIPTION = ("Scores a folder of generations with the paper's metrics as stable-audio-metrics computes "
                   "them: FD_openl3 and KL_passt against a reference folder (or its saved statistics), the "
                   "CLAP score and timing error against a prompts file. Weights are local files; embeddings "
                   "are cached, so re-running after adding files computes only the new ones.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("report_json", "report_markdown")
    OUTPUT_TOOLTIPS = ("The report as JSON: metrics, file counts, per-file values, settings.",
                       "The metrics as a Markdown table.")
    OUTPUT_NODE = True   # it writes the report files: a workflow runs it with nothing downstream
    FUNCTION = "evaluate"

    @classmethod
    def INPUT_TYPES(cls):
        weights = "A name in the checkpoints folder or an absolute path; empty when the metric is not chosen."
        return {"required": {
            "generated": ("STRING", {"default": "audio", "tooltip":
                          "Folder of generated audio (file names are the ids): inside the output folder, "
                          "or an absolute path."}),
            "reference": ("STRING", {"default": "", "tooltip":
                          "Reference audio folder (same file names, for KL_passt) or a statistics .npz saved "
                          "earlier: inside the input folder, or an absolute path. Needed by fd_openl3, kl_passt."}),
            "prompts": ("STRING", {"default": "", "tooltip":
                        "JSON file {name: prompt} or {name: {prompt, seconds_total}} (input folder or absolute "
                        "path). Needed by clap and timing."}),
            "metrics": ("STRING", {"default": ",".join(suite.METRICS), "tooltip":
                        f"Comma-separated, from: {', '.join(suite.METRICS)}."}),
            "openl3_weights": ("STRING", {"default": "", "tooltip":
                               "OpenL3 mel256 weights: openl3_audio_mel256_music.h5 (or _env.h5) or "
                               "torchopenl3's .pth.tar. " + weights}),
            "passt_weights": ("STRING", {"default": "", "tooltip":
                              "PaSST weights passt-s-f128-p16-s10-ap.476-swa.pt. " + weights}),
            "clap": ("STRING", {"default": "", "tooltip":
                     "LAION CLAP: 630k-audioset-fusion-best.pt or the Hugging Face clap-htsat-fused folder. "
                     + weights}),
            "clap_tokenizer": ("STRING", {"default": "", "tooltip":
                               "With a .pt CLAP file only: roberta-base's tokenizer.json (or its folder)."}),
            "openl3_hop": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 1.0, "step": 0.05, "tooltip":
                           "Hop between OpenL3's 1 s windows, seconds (the reference's: 0.5)."}),
            "clap_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip":
                          "Seed of CLAP's fusion crops of long files (the reference's are random)."}),
            "name": ("STRING", {"default": "eval/my_run", "tooltip":
                     "Folder for report.json, report.md, distributions.png and the embedding cache, "
                     "inside the output folder."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "Where the networks run."}),
        }}

    def evaluate(self, generated, reference, prompts, metrics, openl3_weights, passt_weights, clap, clap_tokenizer,
                 openl3_hop, clap_seed, name, device):
        metrics = metric_list(metrics)
        generated_dir = existing_path(generated, "output", "generated")
        suite.audio_files(generated_dir)  # a bad folder fails before any weights load
        reference_path = optional_path(reference, "input", "reference")
        prompt_table = suite.read_prompts(existing_path(prompts, "input", "prompts")) if prompts.strip() else None
        weight = {key: optional_path(value, "checkpoints", key) for key, value in
                  (("openl3_weights", openl3_weights), ("passt_weights", passt_weights), ("clap", clap),
                   ("clap_tokenizer", clap_tokenizer))}
        evaluators = suite.load_evaluators(metrics, device=device_choice(device), openl3_hop=openl3_hop,
                                           clap_seed=clap_seed, **weight)
        out_dir = output_folder(name, "name")
        progress = hooks.Progress(1)
        result, _ = suite.evaluate(generated_dir, reference_path, metrics, evaluators, prompt_table,
                                   cache_dir=out_dir / "cache", show_progress=False,
                                   on_progress=lambda metric, done, total: progress.update(done, total))
        report = suite.write_reports(result, out_dir, {"generated": str(generated_dir), "reference": reference_path,
                                                       "settings": {"metrics": metrics, "openl3_hop": openl3_hop,
                                                                    "clap_seed": clap_seed, **weight}})
        return (json.dumps(report, indent=2), suite.markdown_report(result))
