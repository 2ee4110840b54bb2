"""Time the same work for stable_audio_core and each peer on this machine, on identical weights.

    python benchmarks/run.py --device cpu --out benchmarks/RESULTS.md [--comfyui /tmp/comfy] [--quick]

Work items (sizes in harness/workloads.py; "reduced" depth on CPU, full size on GPU):
  e2e-sao    text to audio, SAO 1.0 architecture: T5 + timing conditioning, CFG sampling with
             dpmpp-3m-sde at fixed steps, VAE decode
  e2e-unet   the same with the paper's U-Net (adp_cfg_1d) and its VAE
  vae-<s>s   VAE decode of <s> seconds of latents (SAO 1.0 Oobleck VAE)
  call-<m>-<n>  one guided diffusion-model call at batch 2 (CFG) on n latent frames (m: sao/unet)
  e2e-sa3-<s>s  Stable Audio 3 Small-shaped text to audio of <s> seconds: T5Gemma, 8 pingpong
             steps without guidance (Small's defaults), SAME-S decode with its noise (seeded)
  call-sa3-<n>  one SA3 DiT call at batch 1 on n latent frames (no guidance)
  vae-sa3-<s>s  one SAME-S decode of <s> seconds of latents, its noise off

Parties, each in its own process and environment: ours (public API, float32), ours-bf16 (the
opt-in matmul_dtype="bfloat16": bfloat16 weights and products, float32 activations), ours-int8 and
ours-auto (load_model(precision="int8" / "auto"): int8 linears / the path chosen from the CPU), sat (stable-audio-tools, --sat-python), diffusers (StableAudioPipeline,
--diffusers-python, weights converted by key mapping), comfyui (ComfyUI's own implementation from
--comfyui FOLDER with --comfyui-python), sa3ref (stable-audio-3, --sa3-python; SA3 items only). A party without a venv is skipped; one that does not
implement an item (diffusers/ComfyUI have no U-Net) has no row there.

Method: one worker process per party and item builds its model once, does one untimed warm-up
run, then the parties run in turn, A B C .. C B A .., --repeats times (so drift and other load
hit everyone alike). Reported: median wall time, the median of the per-round ratios peer / ours
(> 1: we are faster), the peak RSS of a run (VmHWM reset before each run; weights included) and,
on GPU, peak CUDA memory. Agreement: one extra untimed run per pair on identical inputs, with the
deterministic dpmpp-2m sampler where the timed sampler draws noise (the reference's SDE samplers
use a torchsde Brownian tree no one else reproduces), and our side adopting the peer's
conventions where they differ (stable-audio-tools' float16 T5; ComfyUI's unconditional tokens
that keep the timing embeddings); the max abs difference of the outputs is reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The environment every worker starts from, taken before anything here imports stable_audio_core
# (whose acceleration module asks torch for huge pages through THP_MEM_ALLOC_ENABLE): our workers
# set it themselves when they import the package, the peers run with their own defaults.
WORKER_ENVIRONMENT = dict(os.environ)
sys.path[:0] = [str(HERE / "harness"), str(REPO)]

import numpy as np  # noqa: E402

import workloads as W  # noqa: E402
from protocol import READY, RESULT  # noqa: E402

# --emulate-avx2: the environment that caps torch's kernels, oneDNN and MKL to AVX2 in every
# process of the run (the orchestrator's roofline and every party's worker), so an AVX-512 machine
# runs the code paths of an AVX2-only CPU: no AVX-512, no VNNI, no native bfloat16.
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

OURS = ("ours", "ours-bf16", "ours-int8", "ours-auto", "ours-compile", "ours-before")
WORKERS = {"ours": "ours.py", "ours-bf16": "ours.py", "ours-int8": "ours.py", "ours-auto": "ours.py",
           "ours-compile": "ours.py", "sat": "sat.py",
           "diffusers": "diffusers_peer.py", "comfyui": "comfyui.py", "ours-before": "ours.py",
           "sa3ref": "sa3_ref.py"}
# Which parties implement which model family.
FAMILIES = {"sao": ("ours", "ours-bf16", "ours-int8", "ours-auto", "ours-compile", "sat", "diffusers", "comfyui",
                    "ours-before"),
            "unet": ("ours", "ours-bf16", "ours-int8", "ours-auto", "ours-compile", "sat", "ours-before"),
            "sa3": ("ours", "ours-bf16", "ours-int8", "ours-auto", "ours-compile", "sa3ref", "ours-before")}


# --------------------------------------------------------------------------------------------
# Files every party reads
# --------------------------------------------------------------------------------------------

def prepare_files(workdir: Path, scale: str, unet_vae: str, vae_seconds: list[float]) -> dict:
    """Configs, checkpoints, the T5 folder and latents; reused when the config is unchanged."""
    from checkpoints import write_latents, write_model, write_t5_folder

    workdir.mkdir(parents=True, exist_ok=True)
    files = {}
    t5 = workdir / f"t5-{scale}"
    t5_config = W.t5_config(scale)
    if not (t5 / "config.json").is_file() or json.loads((t5 / "config.json").read_text()) != t5_config:
        print(f"writing {t5} ...", flush=True)
        write_t5_folder(t5, t5_config, W.SEED)
    files["t5"] = str(t5)
    for family, config in (("sao", W.sao_config(scale)), ("unet", W.unet_config(scale, unet_vae))):
        config_path = workdir / f"{family}-{scale}.model_config.json"
        checkpoint = workdir / f"{family}-{scale}.safetensors"
        if not checkpoint.is_file() or not config_path.is_file() or json.loads(config_path.read_text()) != config:
            print(f"writing {checkpoint} ...", flush=True)
            count = write_model(config, checkpoint, W.SEED)
            config_path.write_text(json.dumps(config, indent=1))
            (workdir / f"{family}-{scale}.params").write_text(str(count))
        files[family] = {"config": str(config_path), "checkpoint": str(checkpoint),
                         "params": int((workdir / f"{family}-{scale}.params").read_text())}
    for seconds in vae_seconds:
        path = workdir / f"latents-{seconds:g}s.npy"
        if not path.is_file():
            write_latents(path, W.vae_latent_frames(seconds))
        files[f"latents-{seconds:g}"] = str(path)
    return files


def prepare_sa3_files(workdir: Path, scale: str, sa3_python: str | None, vae_seconds: list[float]) -> dict | None:
    """The SA3 checkpoint, config and T5Gemma folder (written in the reference env by
    harness/sa3_files.py, once per workdir and scale) and the SAME latents; None without that env."""
    import torch

    config_path = workdir / f"sa3-{scale}.model_config.json"
    if not config_path.is_file():
        if sa3_python is None:
            return None
        print(f"writing {workdir}/sa3-{scale}.* with {sa3_python} ...", flush=True)
        subprocess.run([sa3_python, str(HERE / "harness" / "sa3_files.py"), str(workdir), "--scale", scale,
                        "--seed", str(W.SEED)], check=True, env=dict(WORKER_ENVIRONMENT, HF_HUB_OFFLINE="1"))
    config = json.loads(config_path.read_text())
    files = {"config": str(config_path), "checkpoint": str(workdir / f"sa3-{scale}.safetensors"),
             "t5gemma": str(workdir / f"t5gemma-{scale}"),
             "params": int((workdir / f"sa3-{scale}.params").read_text())}
    channels = config["model"]["io_channels"]
    for seconds in vae_seconds:
        path = workdir / f"sa3-latents-{seconds:g}s.npy"
        if not path.is_file():
            latents = torch.randn(1, channels, W.sa3_latent_frames(seconds), generator=torch.Generator().manual_seed(1))
            np.save(path, latents.numpy())
        files[f"latents-{seconds:g}"] = str(path)
    return files


def matmul_roofline(threads: int, size: int = 4096, repeats: int = 5, path: str = "fp32") -> float:
    """The machine's matmul rate in GFLOP/s (GOP/s for int8): the best of `repeats` products of two
    size x size matrices on `threads` threads, the ceiling a DiT call's matmuls can reach on that
    path: float32 torch.mm ("fp32"), bfloat16 torch.mm ("bf16"), int8 torch._int_mm ("int8")."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    product = torch.mm
    if path == "bf16":
        a, b = a.bfloat16(), b.bfloat16()
    elif path == "int8":
        a, b = (x.mul(40).round().clamp(-127, 127).to(torch.int8) for x in (a, b))
        product = torch._int_mm
    product(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b)
        best = min(best, time.perf_counter() - start)
    torch.set_num_threads(previous)
    return 2 * size ** 3 / best / 1e9


# The backbone type (models.stable_audio.backbone_type) of each family: what "auto" decides on.
FAMILY_BACKBONES = {"sao": "dit", "unet": "adp_cfg_1d", "sa3": "sa3_dit"}


def party_path(party: str, family: str, capability) -> str:
    """The matmul path a party runs for a family: fp32, bf16 or int8."""
    from stable_audio_core.acceleration import auto_precision

    if party == "ours-auto":
        return auto_precision(capability, FAMILY_BACKBONES[family])
    return {"ours-bf16": "bf16", "ours-int8": "int8"}.get(party, "fp32")


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------

@dataclass
class Worker:
    party: str
    process: subprocess.Popen
    log: Path
    error: str | None = None
    environment: dict = field(default_factory=dict)

    def _read(self, marker: str) -> dict:
        for line in self.process.stdout:
            if line.startswith(marker):
                return json.loads(line[len(marker):])
        return {"error": f"worker exited (code {self.process.wait()}); log: {self.log}\n" + tail(self.log)}

    def request(self, **request) -> dict:
        if self.error:
            return {"error": self.error}
        try:
            self.process.stdin.write(json.dumps({"op": "run", **request}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.error = "worker died; log: " + str(self.log)
            return {"error": self.error}
        reply = self._read(RESULT)
        if "error" in reply and self.process.poll() is not None:
            self.error = reply["error"]
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_worker(party: str, python: str, spec: dict, workdir: Path, env: dict) -> Worker:
    name = f"{spec['name']}-{party}"
    spec_path = workdir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    log = workdir / f"{name}.log"
    workers = Path(spec["repo"]) / "benchmarks" / "workers" if "repo" in spec else HERE / "workers"
    command = [python, str(workers / WORKERS[party]), "--spec", str(spec_path)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=open(log, "w"), text=True, bufsize=1, env=env,
                               cwd=spec.get("cwd", str(REPO)))
    worker = Worker(party, process, log)
    ready = worker._read(READY)
    if "error" in ready:
        worker.error = ready["error"].strip().splitlines()[-1] if ready["error"].strip() else "failed"
        (workdir / f"{name}.error.txt").write_text(ready["error"])
        worker.close()
    else:
        worker.environment = ready.get("environment", {})
    return worker


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------

def timing_value(family: str, seconds: float) -> float | int:
    """seconds_total for the conditioning: the U-Net's `int` conditioners index a table by whole
    seconds (the reference needs a Python int); the DiT's `number` ones take the window length."""
    return int(seconds) if family == "unet" else int(seconds * 1000) / 1000


def item_specs(plan: dict, files: dict, args) -> list[dict]:
    device = args.device
    base = {"device": device, "threads": args.threads, "prompt": W.PROMPT, "seed": W.SEED,
            "cfg_scale": W.CFG_SCALE, "sampler": W.SAMPLER, "agreement_sampler": W.AGREEMENT_SAMPLER,
            "sigma_min": W.SIGMA_MIN, "sigma_max": W.SIGMA_MAX, "t": W.DIFFUSION_TIME, "t5": files.get("t5")}
    specs = []
    for family in ("sao", "unet"):
        if f"e2e-{family}" not in args.items:
            continue
        config = json.loads(Path(files[family]["config"]).read_text())
        sizes = plan["e2e"][family]
        samples = W.window_samples(config, sizes["seconds"])
        specs.append({**base, **files[family], "name": f"e2e-{family}", "item": "e2e", "family": family,
                      "steps": sizes["steps"], "sample_size": samples,
                      "seconds_total": timing_value(family, samples / W.SAMPLE_RATE),
                      "what": f"{samples / W.SAMPLE_RATE:.1f} s, {sizes['steps']} steps {W.SAMPLER}, CFG {W.CFG_SCALE:g}"})
    if "vae" in args.items:
        for seconds in plan["vae_seconds"]:
            specs.append({**base, **files["sao"], "name": f"vae-{seconds:g}s", "item": "vae", "family": "sao",
                          "latents": files[f"latents-{seconds:g}"], "seconds_total": seconds,
                          "what": f"{W.vae_latent_frames(seconds)} latents -> {seconds:g} s stereo"})
    for family in ("sao", "unet"):
        if f"call-{family}" not in args.items:
            continue
        config = json.loads(Path(files[family]["config"]).read_text())
        for frames in plan["call_frames"]:
            frames = -(-frames // W.latent_multiple(config)) * W.latent_multiple(config)
            seconds = frames * W.downsampling_ratio(config) / W.SAMPLE_RATE
            specs.append({**base, **files[family], "name": f"call-{family}-{frames}", "item": "call",
                          "family": family, "frames": frames, "seconds_total": timing_value(family, seconds),
                          "what": f"batch 2 (CFG), {frames} frames, t={W.DIFFUSION_TIME}"})
    sa3 = files.get("sa3")
    if sa3 is not None:
        config = json.loads(Path(sa3["config"]).read_text())
        base_sa3 = {**base, **sa3, "family": "sa3", "cfg_scale": W.SA3_CFG_SCALE, "sampler": W.SA3_SAMPLER,
                    "agreement_sampler": W.SA3_SAMPLER, "steps": W.SA3_STEPS}
        if "e2e-sa3" in args.items:
            for seconds in plan["sa3"]["e2e_seconds"]:
                specs.append({**base_sa3, "name": f"e2e-sa3-{seconds:g}s", "item": "e2e", "seconds_total": seconds,
                              "what": f"SA3 {seconds:g} s: T5Gemma, {W.SA3_STEPS} steps {W.SA3_SAMPLER}, "
                                      f"cfg {W.SA3_CFG_SCALE:g}, SAME-S decode (seeded noise)"})
        if "call-sa3" in args.items:
            for seconds in plan["sa3"]["call_seconds"]:
                frames = W.sa3_latent_frames(seconds)
                flops = W.sa3_dit_matmul_flops(config["model"]["diffusion"]["config"], frames,
                                               W.SA3_PROMPT_TOKENS + 1)
                specs.append({**base_sa3, "name": f"call-sa3-{frames}", "item": "call", "frames": frames,
                              "seconds_total": seconds, "matmul_flops": flops,
                              "what": f"SA3 DiT, batch 1, {frames} frames ({seconds:g} s), t={W.DIFFUSION_TIME}, "
                                      f"{flops / 1e9:.0f} GFLOP of matmuls"})
        if "vae-sa3" in args.items:
            for seconds in plan["sa3"]["vae_seconds"]:
                specs.append({**base_sa3, "name": f"vae-sa3-{seconds:g}s", "item": "vae",
                              "latents": sa3[f"latents-{seconds:g}"], "seconds_total": seconds,
                              "what": f"SAME-S decode of {W.sa3_latent_frames(seconds)} latents, noise off"})
    return specs


def party_spec(spec: dict, party: str, args) -> dict:
    spec = dict(spec)
    spec["dtype"] = "float32"
    if party == "ours-bf16":
        if args.device == "cpu":  # bfloat16 matmul weights, float32 activations (no GPU-side casts)
            spec["matmul_dtype"] = "bfloat16"
        else:  # on a GPU the whole model in bfloat16 (flash attention applies; unmeasured here)
            spec["dtype"] = "bfloat16"
    if party in ("ours-int8", "ours-auto"):  # load_model(precision=...): int8 linears / chosen from the CPU
        spec["precision"] = party.split("-", 1)[1]
    spec["compile"] = party == "ours-compile"
    if party == "sat":
        spec["agree_text_encoder_dtype"] = "float16"
        spec["extra_sys_path"] = args.sat_extra_path
    if party == "ours-before":  # this project at another commit, with that tree's own worker
        spec["repo"] = spec["cwd"] = args.before_repo
    if party == "comfyui":
        spec["comfyui"] = args.comfyui
        spec["cwd"] = args.comfyui
    return spec


def run_item(spec: dict, parties: dict, args, workdir: Path) -> dict:
    family_parties = [p for p in parties if p in FAMILIES[spec["family"]]]
    repeats = args.repeats if spec["item"] != "vae" or spec["seconds_total"] < 40 else args.long_repeats
    print(f"\n== {spec['name']}: {spec['what']} ({repeats} rounds)", flush=True)
    workers, results = {}, {}
    env = dict(WORKER_ENVIRONMENT, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore",
               TOKENIZERS_PARALLELISM="false")
    for party in family_parties:
        spec_for = party_spec(spec, party, args)
        started = time.perf_counter()
        # Our spec asks for the peer's text-encoder dtype only in agreement runs with that peer.
        if party in OURS:
            spec_for["agree_text_encoder_dtype"] = "float16"
        workers[party] = start_worker(party, parties[party], spec_for, workdir, env)
        note = workers[party].error or f"ready in {time.perf_counter() - started:.0f} s"
        print(f"   {party:<12} {note}", flush=True)
        results[party] = {"runs": [], "error": workers[party].error}
    live = [p for p in family_parties if not workers[p].error]
    # A VAE decode is deterministic and the same for everyone, and an SA3 generation is seeded the
    # same way by both parties: their agreement uses the outputs of the last timed round instead
    # of extra runs.
    same_work = spec["item"] == "vae" or (spec["family"] == "sa3" and spec["item"] == "e2e")
    keep = {p: str(workdir / f"{spec['name']}-{p}-timed.npy") for p in live} if same_work else {}
    try:
        for round_index in range(repeats):
            order = live if round_index % 2 == 0 else list(reversed(live))
            for party in order:
                out = keep.get(party) if round_index == repeats - 1 else None
                reply = workers[party].request(mode="timed", out=out)
                if "error" in reply:
                    results[party]["error"] = reply["error"].strip().splitlines()[-1]
                    (workdir / f"{spec['name']}-{party}.error.txt").write_text(reply["error"])
                    print(f"   {party:<12} failed: {results[party]['error']}", flush=True)
                    continue
                results[party]["runs"].append(reply)
                print(f"   round {round_index + 1} {party:<12} {reply['wall_s']:8.2f} s  "
                      f"peak RSS {reply['peak_rss_mb']:7.0f} MB", flush=True)
        agreement(spec, workers, results, workdir, keep)
    finally:
        for worker in workers.values():
            worker.close()
    return {"spec": spec, "results": results,
            "environments": {p: w.environment for p, w in workers.items() if w.environment}}


def agreement(spec: dict, workers: dict, results: dict, workdir: Path, kept: dict) -> None:
    """One untimed run per (ours, peer) pair on identical inputs (or the outputs `kept` from the
    last timed round); record max |ours - peer|."""
    if "ours" not in workers or workers["ours"].error:
        return
    for party, worker in workers.items():
        if party == "ours" or worker.error:
            continue
        peer = "ours" if party in OURS else party
        if party in kept and "ours" in kept and Path(kept[party]).is_file() and Path(kept["ours"]).is_file():
            paths, mine, theirs = [Path(kept["ours"]), Path(kept[party])], {}, {}
        else:
            paths = [workdir / f"{spec['name']}-{who}-agree-{peer}.npy" for who in ("ours", party)]
            mine = workers["ours"].request(mode=f"agree-{peer}", out=str(paths[0]))
            theirs = worker.request(mode=f"agree-{peer}", out=str(paths[1]))
        if "note" in theirs:
            results[party]["agreement"] = {"note": theirs["note"]}
            print(f"   agreement ours vs {party:<12} {theirs['note']}", flush=True)
            continue
        if "error" in mine or "error" in theirs:
            results[party]["agreement"] = {"error": (mine.get("error") or theirs.get("error")).strip().splitlines()[-1]}
            continue
        a, b = np.load(paths[0]), np.load(paths[1])
        if a.shape != b.shape:
            results[party]["agreement"] = {"error": f"shapes differ: ours {a.shape}, {party} {b.shape}"}
            continue
        diff = float(np.abs(a - b).max())
        results[party]["agreement"] = {"max_abs_diff": diff, "max_abs_ref": float(np.abs(b).max()),
                                       "sampler": spec["agreement_sampler"] if spec["item"] == "e2e" and peer != "ours"
                                       else spec.get("sampler") if spec["item"] == "e2e" else None}
        print(f"   agreement ours vs {party:<12} max|diff| {diff:.3e}  (max|{party}| "
              f"{results[party]['agreement']['max_abs_ref']:.3e})", flush=True)
        paths[1].unlink(missing_ok=True)
    for path in list(kept.values()) + [workdir / f"{spec['name']}-ours-agree-{p}.npy" for p in workers]:
        Path(path).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ratio(runs: list[dict], reference: list[dict], key: str) -> float | None:
    """Median over rounds of runs[i][key] / reference[i][key] (rounds are interleaved)."""
    pairs = [(r[key], o[key]) for r, o in zip(runs, reference) if o.get(key)]
    return statistics.median(a / b for a, b in pairs) if pairs else None


# Our reduced-precision variants, in the order the table compares the peers with (the first one
# in the run): the path "auto" picks, else bfloat16, else int8.
FAST_VARIANTS = ("ours-auto", "ours-bf16", "ours-int8")


def fast_party(items: list[dict]) -> str | None:
    """The variant of FAST_VARIANTS that ran in `items` (the first in that order), or None."""
    ran = {party for item in items for party, result in item["results"].items() if result["runs"]}
    return next((party for party in FAST_VARIANTS if party in ran), None)


def summarize(item: dict, gpu: bool, fast_name: str | None = None) -> list[dict]:
    results = item["results"]
    ours = results.get("ours", {}).get("runs", [])
    fast = results.get(fast_name, {}).get("runs", []) if fast_name else []
    rows = []
    for party, result in results.items():
        runs = result["runs"]
        row = {"party": party, "error": result.get("error") if not runs else None, "n": len(runs),
               "agreement": result.get("agreement")}
        if runs:
            row["wall"] = statistics.median(r["wall_s"] for r in runs)
            row["cpu"] = statistics.median(r["cpu_s"] for r in runs)
            row["rss"] = max(r["peak_rss_mb"] for r in runs)
            if gpu:
                row["cuda"] = max(r.get("peak_cuda_mb", float("nan")) for r in runs)
            if ours and party != "ours":
                row["speed"] = _ratio(runs, ours, "wall_s")
                row["speed_cpu"] = _ratio(runs, ours, "cpu_s")
                row["memory"] = row["rss"] / max(r["peak_rss_mb"] for r in ours)
                if gpu:
                    row["cuda_ratio"] = row["cuda"] / max(r.get("peak_cuda_mb", float("nan")) for r in ours)
            if fast and party not in OURS:
                row["speed_fast"] = _ratio(runs, fast, "wall_s")
                row["speed_fast_cpu"] = _ratio(runs, fast, "cpu_s")
                row["memory_fast"] = row["rss"] / max(r["peak_rss_mb"] for r in fast)
        rows.append(row)
    return rows


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def format_table(items: list[dict], gpu: bool) -> str:
    fast = fast_party(items)
    header = ["item", "party", "median wall s", "median CPU s", "peer / ours wall",
              "peer / ours CPU", "peak RSS MB", "peer / ours RSS"]
    if fast:
        header += [f"peer / {fast} wall", f"peer / {fast} CPU", f"peer / {fast} RSS"]
    if gpu:
        header += ["peak CUDA MB", "peer / ours CUDA"]
    header += ["max abs diff vs ours", "max abs (peer)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for item in items:
        for row in summarize(item, gpu, fast):
            name = item["spec"]["name"]
            if row.get("error"):
                cells = [name, row["party"], "failed: " + row["error"][:80]] + [""] * (len(header) - 3)
                lines.append("| " + " | ".join(cells) + " |")
                continue
            agreement = row.get("agreement") or {}
            if "error" in agreement:
                diff, ref = "error: " + agreement["error"][:60], ""
            elif "note" in agreement:
                diff, ref = agreement["note"], ""
            elif agreement:
                diff, ref = f"{agreement['max_abs_diff']:.2e}", f"{agreement['max_abs_ref']:.2e}"
            else:
                diff, ref = ("(reference)" if row["party"] == "ours" else "n/a"), ""
            cells = [name, row["party"], f"{row['wall']:.2f} (n={row['n']})", f"{row['cpu']:.2f}",
                     _x(row.get("speed")) or "1", _x(row.get("speed_cpu")) or "1",
                     f"{row['rss']:.0f}", _x(row.get("memory")) or "1"]
            if fast:
                cells += [_x(row.get("speed_fast")), _x(row.get("speed_fast_cpu")), _x(row.get("memory_fast"))]
            if gpu:
                cells += [f"{row.get('cuda', float('nan')):.0f}", _x(row.get("cuda_ratio")) or "1"]
            cells += [diff, ref]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kernel_levels(items: list[dict]) -> str:
    """What each party's worker reported: torch's kernel level and whether oneDNN runs bfloat16."""
    seen = {}
    for item in items:
        for party, env in item.get("environments", {}).items():
            if "cpu_capability" in env:
                seen[party] = f"{party} {env['cpu_capability']}" + (
                    ", oneDNN bf16" if env.get("onednn_bf16") else ", no oneDNN bf16")
    return "; ".join(seen.values()) or "not reported"


def write_report(path: Path | None, items: list[dict], header: dict, args, gpu: bool) -> str:
    lines = [f"Command: `{header['command']}`", "",
             f"- Date: {header['date']}; wall time of the whole run {header['elapsed_min']:.0f} min",
             f"- CPU: {header['cpu']} ({header['cores']} cores visible, {args.threads} threads per "
             f"party, AVX512-BF16: {header['bf16_cpu']}); GPU: {header.get('gpu') or 'none'}",
             *([f"- Emulated AVX2-only CPU: every process of the run started with {header['caps']} "
                "(torch's kernels, oneDNN and MKL capped to AVX2: no AVX-512, no VNNI, no native bfloat16); "
                "party kernels: " + kernel_levels(items)] if header.get("caps") else []),
             f"- CPU features: {header['features']}; fp32 matmul roofline {header['roofline']:.0f} GFLOP/s "
             f"(torch.mm 4096^3, {args.threads} threads, best of 5, measured at the start)",
             f"- torch: {header['torch']} (all parties); float32 everywhere except ours-bf16 (bfloat16 matmuls), "
             f"ours-int8 (int8 linears and U-Net convolutions) and ours-auto (on this CPU: {header['auto']})",
             f"- Load average (1 min) at start / end: {header['load_start']:.2f} / {header['load_end']:.2f}"
             " - other jobs share this machine; compare ratios, not absolute seconds",
             f"- Scale: {header['scale']} (see benchmarks/harness/workloads.py); parameters: "
             f"SAO-shaped {header['params'].get('sao', 0) / 1e6:.0f} M, U-Net-shaped {header['params'].get('unet', 0) / 1e6:.0f} M "
             f"(U-Net VAE: {header['unet_vae']})"
             + (f"; SA3 Small-shaped ({header['sa3_scale']}) DiT {header['params']['sa3'] / 1e6:.0f} M"
                if header["params"].get("sa3") else "")]
    if header.get("roofline_gflops"):
        rooflines = header.get("rooflines", {"fp32": header["roofline_gflops"]})
        others = "".join(f"; {kind} {rate:.0f} G{'OP' if kind == 'int8' else 'FLOP'}/s "
                         f"({'torch._int_mm' if kind == 'int8' else 'bfloat16 torch.mm'})"
                         for kind, rate in rooflines.items() if kind != "fp32")
        lines.append(f"- Matmul roofline: {header['roofline_gflops']:.0f} GFLOP/s (best of 5 float32 torch.mm "
                     f"4096 x 4096 on {args.threads} threads, measured at the start of the run){others}")
        from stable_audio_core.acceleration import cpu_capability

        capability = cpu_capability()
        for item in items:
            flops = item["spec"].get("matmul_flops")
            for party, result in item["results"].items():
                if flops and result["runs"]:
                    wall = statistics.median(r["wall_s"] for r in result["runs"])
                    rate = flops / wall / 1e9
                    matmuls = party_path(party, item["spec"]["family"], capability)
                    matmuls = matmuls if matmuls in rooflines else "fp32"
                    lines.append(f"- `{item['spec']['name']}` {party}: {flops / 1e9:.1f} GFLOP of DiT matmuls in "
                                 f"{wall:.2f} s = {rate:.0f} GFLOP/s, {100 * rate / rooflines[matmuls]:.0f}% "
                                 f"of the {matmuls} roofline")
    huge = sorted({party for item in items for party, env in item.get("environments", {}).items()
                   if env.get("huge_pages")})
    lines += [f"- Transparent huge pages for torch's CPU allocator (THP_MEM_ALLOC_ENABLE=1, which our "
              f"entry points request): {', '.join(huge) or 'no party'}; the others run with their "
              "defaults (4 kB pages)", ""]
    for item in items:
        spec = item["spec"]
        lines.append(f"- `{spec['name']}`: {spec['what']}")
    lines += ["", format_table(items, gpu), "",
              "peer / ours wall (CPU): median over rounds of the peer's wall (process CPU) time over "
              "ours in the same round; above 1 means ours is faster. On the ours-bf16, ours-int8, "
              "ours-auto and ours-compile rows it is that variant over ours (below 1: faster than our float32). "
              "peer / ours RSS: peak resident memory of a run (weights included), peer over ours; above 1 "
              "means ours uses less. peer / ours-auto (or ours-bf16, ours-int8: the first of them in the "
              "run) wall, CPU and RSS: the same ratios against that variant. "
              "Agreement: e2e rows compare a run with the deterministic dpmpp-2m on the same seed and "
              "inputs (the timed dpmpp-3m-sde draws noise the parties draw differently); SA3 e2e rows "
              "compare the timed outputs (both parties seed and draw alike); VAE rows "
              "compare the timed outputs; our variants' rows compare with our float32 "
              "output of the timed work itself."]
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.write_text("# Benchmark results\n\n" + text)
    return text


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def default_python(path: str) -> str | None:
    return path if Path(path).is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--from-results", type=Path, default=None,
                        help="write the report of an earlier run's results.json (printed at its end) "
                             "instead of running anything")
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 rounds, for development")
    parser.add_argument("--items", default="e2e-sao,e2e-unet,vae,call-sao,call-unet,e2e-sa3,call-sa3,vae-sa3",
                        help="comma-separated subset of e2e-sao, e2e-unet, vae, call-sao, call-unet, "
                             "e2e-sa3, call-sa3, vae-sa3")
    parser.add_argument("--parties", default="ours,ours-bf16,sat,diffusers,comfyui,sa3ref",
                        help="comma-separated; also ours-int8 and ours-auto (load_model precision int8 / "
                             "auto), ours-compile (torch.compile) and ours-before (--before-repo)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per item (default 3, quick 2)")
    parser.add_argument("--long-repeats", type=int, default=2, help="rounds for VAE items of 40 s and more")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sa-bench")
    parser.add_argument("--sat-python", default=default_python("/tmp/sat-ref/bin/python"))
    parser.add_argument("--sat-extra-path", default="/tmp/tf-ref/lib/python3.11/site-packages",
                        help="site-packages with transformers, appended to the reference's sys.path "
                             "when it lacks transformers (its T5 conditioner imports it)")
    parser.add_argument("--sa3-python", default=default_python("/tmp/sa3-ref/bin/python"),
                        help="python of a stable-audio-3 environment (the sa3ref party; writes the SA3 files)")
    parser.add_argument("--sa3-e2e-seconds", default=None,
                        help="comma-separated durations of the e2e-sa3 items (default 10,60; quick 10)")
    parser.add_argument("--diffusers-python", default=default_python("/tmp/diffusers-ref/bin/python"))
    parser.add_argument("--comfyui", default=None, help="a ComfyUI source folder (enables the comfyui party)")
    parser.add_argument("--comfyui-python", default=default_python("/tmp/comfy-venv/bin/python"))
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="run every party (and the roofline) with torch, oneDNN and MKL capped to AVX2 "
                             f"({' '.join(f'{k}={v}' for k, v in AVX2_CAPS.items())}): an AVX2-only CPU on an "
                             "AVX-512 machine")
    parser.add_argument("--before-repo", default=None,
                        help="a checkout of this project at another commit with its own .venv (enables the "
                             "ours-before party: that tree against this one, e.g. before/after a refactor)")
    args = parser.parse_args()
    args.items = args.items.split(",")
    args.repeats = args.repeats or (2 if args.quick else 3)
    gpu = args.device != "cpu"
    if args.from_results:
        recorded = json.loads(args.from_results.read_text())
        print(write_report(args.out, recorded["items"], recorded["header"], args, bool(recorded["header"].get("gpu"))))
        return
    started = time.perf_counter()
    if args.emulate_avx2:  # before anything here runs a kernel: the libraries read the caps once
        os.environ.update(AVX2_CAPS)
        WORKER_ENVIRONMENT.update(AVX2_CAPS)

    import torch

    from stable_audio_core.acceleration import auto_precision, cpu_capability
    from stable_audio_core.models.autoencoder import DECODER_TYPES

    header = {"command": "python " + " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:]),
              "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(),
              "cores": os.cpu_count(), "bf16_cpu": cpu_capability().native_bf16,
              "torch": torch.__version__, "load_start": os.getloadavg()[0],
              "gpu": torch.cuda.get_device_name(0) if gpu and torch.cuda.is_available() else None,
              "features": cpu_capability().describe(), "roofline": matmul_roofline(args.threads),
              "auto": ", ".join(f"{family} {auto_precision(cpu_capability(), backbone)}"
                                for family, backbone in FAMILY_BACKBONES.items()),
              "caps": " ".join(f"{k}={v}" for k, v in AVX2_CAPS.items()) if args.emulate_avx2 else None}
    if args.emulate_avx2 and (torch.backends.cpu.get_cpu_capability() != "AVX2" or cpu_capability().native_bf16):
        parser.error("--emulate-avx2: the caps did not take effect in this process (torch reports "
                     f"{torch.backends.cpu.get_cpu_capability()}); was a kernel run before they were set?")
    print(f"CPU: {header['cpu']}; features: {header['features']}; fp32 matmul roofline "
          f"{header['roofline']:.0f} GFLOP/s", flush=True)
    plan = W.plan(args.device, args.quick)
    header["scale"] = plan["scale"]
    header["unet_vae"] = "dac" if "dac" in DECODER_TYPES else "oobleck (the dac type is not built in this tree)"
    files, header["params"] = {}, {}
    if any(not item.endswith("-sa3") for item in args.items):  # the SAO / U-Net files
        files = prepare_files(args.workdir / plan["scale"], plan["scale"], header["unet_vae"].split()[0],
                              plan["vae_seconds"])
        header["params"] = {family: files[family]["params"] for family in ("sao", "unet")}
    plan["sa3"] = W.sa3_plan(args.device, args.quick)
    if args.sa3_e2e_seconds:
        plan["sa3"]["e2e_seconds"] = [float(s) for s in args.sa3_e2e_seconds.split(",")]
    if any(item.endswith("-sa3") for item in args.items):
        sa3_scale = "full" if gpu else "reduced"
        files["sa3"] = prepare_sa3_files(args.workdir / sa3_scale, sa3_scale, args.sa3_python,
                                         plan["sa3"]["vae_seconds"])
        header["sa3_scale"] = (f"{sa3_scale}: Small's widths, heads and SAME-S, DiT depth "
                               f"{json.loads(Path(files['sa3']['config']).read_text())['model']['diffusion']['config']['depth']}"
                               if files["sa3"] else None)
        header["params"]["sa3"] = files["sa3"]["params"] if files["sa3"] else 0
    if "call-sa3" in args.items:
        header["roofline_gflops"] = header["roofline"]
        paths = {party_path(party, "sa3", cpu_capability()) for party in args.parties.split(",")}
        header["rooflines"] = {"fp32": header["roofline"],
                               **{path: matmul_roofline(args.threads, path=path) for path in paths - {"fp32"}}}

    pythons = {"ours": sys.executable, "ours-bf16": sys.executable, "ours-compile": sys.executable,
               "ours-int8": sys.executable, "ours-auto": sys.executable,
               "sat": args.sat_python, "diffusers": args.diffusers_python, "sa3ref": args.sa3_python,
               "comfyui": args.comfyui_python if args.comfyui else None,
               "ours-before": (default_python(str(Path(args.before_repo) / ".venv" / "bin" / "python"))
                               if args.before_repo else None)}
    parties = {}
    for party in args.parties.split(","):
        if party not in pythons:
            parser.error(f"unknown party {party!r}; choose from {sorted(pythons)}")
        if pythons[party] is None:
            print(f"skipping {party}: no environment (see --help)")
        elif party == "ours-bf16" and not gpu and not header["bf16_cpu"]:
            print("skipping ours-bf16: this CPU has no native bfloat16 (avx512_bf16/amx)")
        else:
            parties[party] = pythons[party]

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    items = []
    for spec in item_specs(plan, files, args):
        items.append(run_item(spec, parties, args, run_dir))
    header["load_end"] = os.getloadavg()[0]
    header["elapsed_min"] = (time.perf_counter() - started) / 60
    (run_dir / "results.json").write_text(json.dumps({"header": header, "items": items}, indent=1, default=str))
    print("\n" + write_report(args.out, items, header, args, gpu))
    print(f"raw results: {run_dir / 'results.json'}")
    shutil.rmtree(run_dir / "unused", ignore_errors=True)


if __name__ == "__main__":
    main()
