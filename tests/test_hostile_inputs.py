"""What is guaranteed when a user, a workflow or the machine misbehaves.

Every bad input is a clear error (naming the input, the value and what is accepted) before any
expensive work; every file the project writes is complete or absent, never a `.partial-*`, never
over a file nobody asked to replace, mode 0666 minus the umask; concurrent savers never pick the
same name; Ctrl-C and SIGTERM at any moment leave a complete file or none.

Cases that spawn processes (interrupts, concurrency) run a few tries by default and the issue's
20 tries per command under the `heavy` mark.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_core import atomic_files
from stable_audio_core.atomic_files import PARTIAL_PREFIX, atomic_write, reserve_numbered, write_bytes
from stable_audio_core.audio.io import read_audio, read_audio_window, set_channels, write_audio
from stable_audio_core.audio.tags import write_tags, write_sidecar
from stable_audio_core.checkpoint import read_state_dict
from stable_audio_core.config import load_model_config
from stable_audio_core.errors import (AudioFileError, CheckpointError, ConfigError, InputError, NonFiniteError,
                                      OutputFileError)
from stable_audio_core.pipeline import check_request, generate, resolve_sampling, resolve_seed
from stable_audio_host.arguments import check_generate, window_warning
from stable_audio_host.cli import build_parser
from stable_audio_host.executor import WorkflowInvalid
from stable_audio_host.pack import load_pack
from stable_audio_host.runtime import Folders, HostRuntime
from stable_audio_host.validate import validate_prompt
from stable_audio_host.workflow import WorkflowFileError, parse_workflow, read_workflow, to_api
from helpers import ROOT, perturbed_model, tiny_config

ROOT_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def leftovers(folder: Path) -> list[str]:
    """Temp files, and empty files (an abandoned name reservation), anywhere under `folder`."""
    return sorted(p.name for p in folder.rglob("*")
                  if p.name.startswith(PARTIAL_PREFIX) or (p.is_file() and p.stat().st_size == 0))


def generate_args(*extra: str):
    return build_parser().parse_args(["generate", "rain", *extra])


def expected_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# --- files: atomic, exclusive, readable ------------------------------------------------------

def test_an_interrupt_during_the_write_leaves_no_file_and_no_partial(tmp_path, monkeypatch):
    def encoder_interrupted(path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(sf, "write", encoder_interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "a.wav", torch.zeros(2, 100), 44100)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_becomes_a_clean_exit_that_removes_the_temp_file(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    atomic_files.install_termination_handler()
    try:
        def killed_mid_write(temp):
            Path(temp).write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(atomic_files.Terminated):
            atomic_write(tmp_path / "out.bin", killed_mid_write)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def test_a_reserved_name_is_given_back_when_its_write_fails(tmp_path):
    path = reserve_numbered(tmp_path, lambda n: f"a_{n:05d}_.wav", 1)
    with pytest.raises(NonFiniteError):
        write_audio(path, torch.full((2, 10), float("nan")), 44100, reserved=True)
    assert list(tmp_path.iterdir()) == []


def test_numbered_names_are_claimed_before_writing_so_savers_never_share_one(tmp_path):
    first = reserve_numbered(tmp_path, lambda n: f"a_{n:05d}_.wav", 1)
    second = reserve_numbered(tmp_path, lambda n: f"a_{n:05d}_.wav", 1)  # counter computed before the first wrote
    assert (first.name, second.name) == ("a_00001_.wav", "a_00002_.wav")


def test_an_existing_file_is_replaced_only_when_asked(tmp_path):
    path = tmp_path / "take.wav"
    write_audio(path, torch.zeros(2, 10), 44100)
    with pytest.raises(OutputFileError, match="already exists"):
        write_audio(path, torch.ones(2, 20) * 0.5, 44100, overwrite=False)
    assert sf.info(str(path)).frames == 10
    path.with_suffix(".flac").write_bytes(b"x")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_generate(generate_args("-o", str(path)))
    check_generate(generate_args("-o", str(path), "--overwrite"))


def test_written_files_have_the_usual_permissions_not_0600(tmp_path):
    audio = write_audio(tmp_path / "a.flac", torch.zeros(2, 10), 44100, tags={"prompt": "{}"})
    write_tags(audio, {"prompt": "rain"})
    sidecar = write_sidecar(tmp_path / "b.wav", {"prompt": "{}"})
    data = write_bytes(tmp_path / "c.bin", b"x")
    for path in (audio, sidecar, data):
        assert stat.S_IMODE(path.stat().st_mode) == expected_mode(), path


def test_a_full_disk_is_reported_with_the_file_name(tmp_path):
    def disk_full(temp):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OutputFileError, match=r"could not write .*out\.wav: the disk holding .* is full"):
        atomic_write(tmp_path / "out.wav", disk_full)
    assert list(tmp_path.iterdir()) == []


def test_flac_tags_are_inside_the_file_when_it_appears(tmp_path):
    path = write_audio(tmp_path / "a.flac", torch.zeros(2, 10), 44100, tags={"DESCRIPTION": "rain"})
    from stable_audio_core.audio.tags import read_tags
    assert read_tags(path)["DESCRIPTION"] == "rain"


# --- generate's arguments: refused before the model loads ---------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], r"steps must be at least 1 and at most 10000"),
    (["--steps", "100000"], r"at most 10000"),
    (["--window", "0"], r"--window must be in \(0, 3600\]"),
    (["--batch", "10000"], r"batch_size must be a whole number in 1..64"),
    (["--seed", str(2**64 - 1)], r"seed must be -1 \(random\) or in 0..18446744073709551614"),
    (["--seed", "-12345"], r"seed must be -1 \(random\)"),
    (["--cfg-rescale", "5"], r"cfg_rescale must be in \[0, 1\]"),
    (["--sigma-min", "100", "--sigma-max", "0.5"], r"sigma_min must be below sigma_max"),
    (["--sigma-min", "0"], r"must be positive"),
    (["--seconds", "-1"], r"seconds_total must be positive"),
    (["--seconds", "nan"], r"seconds_total must be a finite number"),
    (["--threads", "-4"], r"--threads must be 1 or more"),
    (["--threads", "0"], r"--threads must be 1 or more"),
    (["--device", "banana"], r"--device 'banana' is not a device"),
    (["--device", "cuda:7"], r"--device cuda:7"),
])
def test_bad_generate_arguments_are_refused_before_any_work(extra, message):
    if extra[:2] == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(InputError, match=message):
        check_generate(generate_args(*extra))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a PyTorch without a usable GPU")
def test_cuda_on_a_cpu_build_is_refused():
    with pytest.raises(InputError, match="--device cuda: this PyTorch build"):
        check_generate(generate_args("--device", "cuda"))


def test_a_config_without_its_checkpoint_is_refused_instead_of_sampling_random_weights(tmp_path):
    config = tmp_path / "model_config.json"
    config.write_text(json.dumps(tiny_config()))
    with pytest.raises(InputError, match="--config needs its --checkpoint"):
        check_generate(generate_args("--config", str(config)))


def test_zero_steps_and_window_are_refused_in_the_api_too():
    with pytest.raises(InputError, match="steps must be at least 1"):
        check_request(steps=0)
    with pytest.raises(InputError, match="sigma_min must be below sigma_max"):
        check_request(sigma_min=100.0, sigma_max=0.5)


def test_a_window_far_beyond_the_request_gets_a_warning_with_the_estimate():
    warning = window_warning(600.0, 0.0, 1.0, model_window=47.55)
    assert "12.6x the model's 47.5 s window for 1 s of audio" in warning
    assert window_warning(None, 0.0, 1.0, 47.55) is None
    assert window_warning(95.0, 0.0, 90.0, 47.55) is None   # a long request needs a long window


def test_seeds_minus_one_is_random_and_the_range_is_checked_per_item():
    assert 0 <= resolve_seed(-1) < 2**32
    assert resolve_seed(2**64 - 2) == 2**64 - 2
    with pytest.raises(InputError, match="item seeds run to seed \\+ 3"):
        resolve_seed(2**64 - 3, batch_size=4, seed_per_item=True)
    with pytest.raises(InputError, match="whole number"):
        resolve_seed(1.5)


# --- output targets: checked before generating --------------------------------------------------

@pytest.mark.parametrize("target, extra, message", [
    ("/dev/full", [], r"/dev/full exists and is not a folder"),
    ("/dev/full.wav", [], r"no permission|not a folder"),
    ("x.xyz", [], r"unknown audio extension '.xyz'"),
    ("x.wav", ["--format", "flac"], r"names a .wav file but --format is flac"),
])
def test_bad_output_targets_are_refused_before_generating(tmp_path, monkeypatch, target, extra, message):
    monkeypatch.chdir(tmp_path)
    if target == "/dev/full.wav" and os.access("/dev", os.W_OK):
        pytest.skip("this user may create files in /dev")
    with pytest.raises(InputError, match=message):
        check_generate(generate_args("-o", target, *extra))


def test_an_existing_folder_named_like_a_file_is_refused(tmp_path):
    (tmp_path / "x.wav").mkdir()
    with pytest.raises(InputError, match="is an existing folder"):
        check_generate(generate_args("-o", str(tmp_path / "x.wav")))


def test_a_read_only_folder_is_refused_before_generating(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):   # root may write anywhere: simulate the permission check
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real(p, mode))
    with pytest.raises(InputError, match="no permission to create files in .*locked"):
        check_generate(generate_args("-o", str(folder / "a.wav")))
    with pytest.raises(InputError, match="no permission"):
        check_generate(generate_args("-o", str(folder / "sub")))


# --- model configs -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(sample_size="abc"), r"sample_size must be a whole number of at least 1, got 'abc'"),
    (lambda c: c.update(sampling_defaults={"steps": "fifty"}), r"sampling_defaults.steps must be a whole number"),
    (lambda c: c.update(sampling_defaults={"sampler": 3}), r"sampling_defaults.sampler must be a sampler name"),
    (lambda c: c["model"].update(io_channels=-2), r"model.io_channels must be a whole number"),
    (lambda c: c["model"]["conditioning"].update(configs=7), r"configs must be a list"),
])
def test_malformed_model_configs_name_the_key_and_value(tmp_path, change, message):
    config = tiny_config()
    change(config)
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_model_config(path)


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "model_config.json"
    path.write_bytes(b'{"model_type": "\xff\xfe"}')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_model_config(path)


def test_a_deeply_nested_config_is_a_config_error(tmp_path):
    path = tmp_path / "model_config.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nests its JSON too deeply"):
        load_model_config(path)


def test_a_pickled_training_state_is_refused_without_suggesting_to_unpickle_it(tmp_path):
    from stable_audio_core.training.state import STATE_FILE, load_training_state
    torch.save({"step": Path("a")}, str(tmp_path / STATE_FILE))
    with pytest.raises(CheckpointError) as caught:
        load_training_state(tmp_path)
    assert "weights_only=False" not in str(caught.value) and "not a plain tensor file" in str(caught.value)


def test_the_checkpoint_error_never_suggests_loading_a_pickle(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"weights": Path("a")}, str(path))   # a pickled object, not a tensor
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert "never arbitrary pickles" in message and "weights_only=False" not in message
    assert "will likely succeed" not in message


# --- workflow files ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classes():
    return load_pack(ROOT).classes


def ui_workflow(**changes) -> dict:
    base = {"nodes": [{"id": 1, "type": "StableAudio_SaveAudio", "inputs": [], "widgets_values": ["a", "wav"]}],
            "links": []}
    base.update(changes)
    return base


@pytest.mark.parametrize("workflow, message", [
    (ui_workflow(links=[[1]]), r"link 0 must be \[id, origin id"),
    (ui_workflow(links=7), r"'links' must be a list, got int"),
    (ui_workflow(nodes=[{"id": 3, "inputs": []}]), r"node 3 has no 'type'"),
    (ui_workflow(nodes=[{"id": 3, "type": "X", "inputs": [{"name": "a", "link": [1]}]}]), r"not a link id"),
    (ui_workflow(nodes=["node"]), r"node 0 of the workflow is not a node object"),
])
def test_malformed_ui_workflows_are_file_errors_not_tracebacks(classes, workflow, message):
    with pytest.raises(WorkflowFileError, match=message):
        to_api(workflow, classes)


def test_a_workflow_that_is_not_utf8_is_a_file_error(tmp_path):
    path = tmp_path / "w.json"
    path.write_bytes(b'{"1": "\xff"}')
    with pytest.raises(WorkflowFileError, match="is not UTF-8 text"):
        read_workflow(path)


def test_deeply_nested_json_is_a_file_error():
    with pytest.raises(WorkflowFileError, match="nests its JSON too deeply"):
        parse_workflow("[" * 100_000 + "]" * 100_000)


def test_a_long_chain_and_a_long_cycle_are_checked_without_recursion(classes):
    count = 1500   # past Python's recursion limit (1000)
    prompt = {str(i): {"class_type": "StableAudio_TrimSilence",
                       "inputs": {"audio": [str(i + 1), 0], "seconds_total": 0.0, "threshold_db": -60.0}}
              for i in range(1, count)}
    prompt["0"] = {"class_type": "StableAudio_SaveAudio",
                   "inputs": {"audio": ["1", 0], "filename_prefix": "a", "format": "wav"}}
    prompt[str(count)] = {"class_type": "StableAudio_TrimSilence",
                          "inputs": {"audio": ["1", 0], "seconds_total": 0.0, "threshold_db": -60.0}}
    report = validate_prompt(prompt, classes)
    cycles = [e for entry in report.node_errors.values() for e in entry["errors"] if e["type"] == "dependency_cycle"]
    assert len(cycles) == count and cycles[0]["details"].count("->") == count


def test_workflow_widget_values_are_converted_and_range_checked_like_comfyui(classes):
    prompt = {"1": {"class_type": "StableAudio_TrimSilence",
                    "inputs": {"audio": ["2", 0], "seconds_total": "5", "threshold_db": -500}},
              "2": {"class_type": "StableAudio_LoadAudio", "inputs": {"audio": "clip.wav"}},
              "3": {"class_type": "StableAudio_SaveAudio",
                    "inputs": {"audio": ["1", 0], "filename_prefix": "a", "format": "wav"}}}
    report = validate_prompt(prompt, classes)
    assert prompt["1"]["inputs"]["seconds_total"] == 5.0   # "5" converts, as in ComfyUI
    assert [e["type"] for e in report.node_errors["1"]["errors"]] == ["value_smaller_than_min"]


# --- audio inputs: NaN/Inf refused where they enter, naming the input ----------------------------

def test_a_nan_audio_file_is_refused_when_read_naming_the_file(tmp_path):
    path = tmp_path / "nan.wav"
    data = np.zeros((100, 2), dtype=np.float32)
    data[5, 1] = np.nan
    sf.write(str(path), data, 8000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match=r"1 NaN/Inf value\(s\) in the audio file .*nan\.wav"):
        read_audio(path)


@pytest.fixture
def pack_host(tmp_path):
    pack = load_pack(ROOT)
    (tmp_path / "output").mkdir()
    pack.module.set_host(HostRuntime(Folders(models=tmp_path, input=tmp_path, output=tmp_path / "output"),
                                     device="cpu", show_progress=False))
    return pack, tmp_path / "output"


def test_save_audio_refuses_nan_input_and_writes_nothing(pack_host):
    pack, output = pack_host
    node = pack.classes["StableAudio_SaveAudio"]()
    audio = {"waveform": torch.full((1, 2, 100), float("nan")), "sample_rate": 8000}
    pack_errors = importlib.import_module(pack.name + ".stable_audio_core.errors")   # the pack's own copy
    with pytest.raises(pack_errors.NonFiniteError, match="Save Audio's audio input"):
        node.save(audio, "a", "wav")
    assert list(output.rglob("*")) == []


@pytest.fixture(scope="module")
def tiny_model():
    return perturbed_model(tiny_config())


def test_nan_init_audio_is_refused_before_sampling_naming_init_audio(tiny_model):
    steps = []
    with pytest.raises(NonFiniteError, match="in init_audio"):
        generate(tiny_model, conditioning={"prompt": 1.0, "seconds_start": 0.0, "seconds_total": 0.01}, steps=2,
                 init_audio=(44100, torch.full((2, 100), float("nan"))), callback=steps.append)
    assert steps == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(seconds_total="5"), r"seconds_total must be a finite number, got '5'"),
    (dict(steps=2.5), r"steps must be at least 1 and at most 10000 \(a whole number\), got 2.5"),
    (dict(seed=-7), r"seed must be -1 \(random\)"),
    (dict(cfg_rescale=5.0), r"cfg_rescale must be in \[0, 1\]"),
    (dict(batch_size="2"), r"batch_size must be a whole number"),
])
def test_api_values_of_the_wrong_type_or_range_are_refused(tiny_model, kwargs, message):
    with pytest.raises(InputError, match=message):
        generate(tiny_model, conditioning={"prompt": 1.0}, **{"steps": 1, **kwargs})


def test_the_sampler_settings_refuse_inverted_sigmas_for_nodes_and_api(tiny_model):
    with pytest.raises(InputError, match="sigma_min must be below sigma_max"):
        resolve_sampling(tiny_model, sigma_min=100.0, sigma_max=0.5)
    with pytest.raises(InputError, match="sigma_min must be below sigma_max"):
        resolve_sampling(tiny_model, sigma_max=0.2)   # below the model's default sigma_min 0.3


# --- smaller cases ------------------------------------------------------------------------------

def test_six_channel_audio_is_mixed_down_not_truncated():
    surround = torch.zeros(6, 4)
    surround[2] = 1.0   # centre only
    stereo = set_channels(surround, 2)
    assert torch.allclose(stereo[0], stereo[1]) and stereo[0, 0] > 0.2   # centre in both sides
    surround = torch.zeros(6, 4)
    surround[5] = 1.0   # right surround only
    stereo = set_channels(surround, 2)
    assert stereo[0].abs().max() == 0 and stereo[1, 0] > 0.2
    assert set_channels(torch.ones(6, 4), 2).abs().max() <= 1.0   # full scale cannot clip
    quad = set_channels(torch.arange(4.0)[:, None].expand(4, 3), 2)   # L R Ls Rs
    assert quad[:, 0].tolist() == [1.0, 2.0]


def test_a_long_init_audio_is_read_only_as_far_as_the_window(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(str(path), np.zeros((8000 * 60, 2), dtype=np.float32), 8000)   # a minute
    import stable_audio_core.audio.io as audio_module
    reads = []
    real = audio_module.read_audio
    monkeypatch.setattr(audio_module, "read_audio", lambda p, start=0, stop=None: reads.append(stop) or real(p, start, stop))
    window = read_audio_window(path, 0, 44100 * 2, 44100)
    assert window.shape == (2, 44100 * 2)
    assert reads and reads[0] < 8000 * 3   # about two seconds of the file, not sixty


def test_generate_reads_init_audio_through_the_window_reader():
    source = (ROOT / "host" / "cli.py").read_text()
    assert "read_audio_window(args.init_audio" in source and "read_audio(args.init_audio" not in source


def test_a_sidecar_keeps_the_prompt_that_reproduces_the_file_not_the_whole_workflow(pack_host):
    pack, output = pack_host
    node = pack.classes["StableAudio_SaveAudio"]()
    prompt = {"1": {"class_type": "StableAudio_LoadAudio", "inputs": {"audio": "a.wav"}},
              "2": {"class_type": "StableAudio_SaveAudio", "inputs": {"audio": ["1", 0]}},
              "9": {"class_type": "Unrelated", "inputs": {"text": "x" * 1000}}}
    audio = {"waveform": torch.zeros(2, 2, 100), "sample_rate": 8000}
    node.save(audio, "a", "wav", prompt=prompt, extra_pnginfo={"workflow": {"nodes": ["big"] * 1000}},
              unique_id="2")
    sidecars = sorted(output.glob("*.json"))
    assert len(sidecars) == 2
    assert json.loads(sidecars[0].read_text()) == {"prompt": {k: prompt[k] for k in ("1", "2")}}


# --- processes: interrupts at random moments, concurrent savers ----------------------------------

HARNESS = textwrap.dedent('''
    """Fork children that run the CLI; interrupt each at a random moment; report what is left."""
    import json, os, random, signal, sys, time
    from pathlib import Path
    import soundfile as sf
    from stable_audio_host.cli import main

    spec = json.loads(sys.argv[1])
    root, rng = Path(spec["root"]), random.Random(spec["seed"])
    import stable_audio_core.default_model
    stable_audio_core.default_model.DEFAULT_MODEL_DIR = Path(spec["model"])   # a tiny model of the bundled kind

    def child(argv, hook):
        import soundfile
        if hook:   # deliver the signal from inside the encoder, after its bytes are written
            real = soundfile.write
            def write(*a, **k):
                real(*a, **k)
                os.kill(os.getpid(), getattr(signal, hook))
            soundfile.write = write
        try:
            code = main(argv)
        except BaseException:
            code = 99
        os._exit(code)

    def run(argv, delay, sig, hook=None):
        started = time.time()
        pid = os.fork()
        if pid == 0:
            child(argv, hook)
        if delay is not None:
            time.sleep(delay)
            try:
                os.kill(pid, getattr(signal, sig))
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), time.time() - started

    results = []
    for index, (argv_template, tries) in enumerate(spec["commands"]):
        folder = root / f"cmd{index}"
        argv = [a.replace("{out}", str(folder)) for a in argv_template]
        duration = None
        for attempt in range(tries):
            if attempt == 2:   # random moments: spread over an uninterrupted run's duration
                code, duration = run([a.replace("{n}", "ref") for a in argv], None, None)
                assert code == 0, f"uninterrupted run failed: {code}"
            sig = ("SIGINT", "SIGTERM")[attempt % 2]
            hook = sig if attempt < 2 else None      # the first two land inside the write
            delay = None if hook else rng.uniform(0.0, duration * 1.1)
            code, _ = run([a.replace("{n}", str(attempt)) for a in argv], delay, sig, hook)
            results.append({"command": index, "attempt": attempt, "signal": sig, "code": code,
                            "during_write": bool(hook)})
    for path in sorted(root.rglob("*")):
        if path.is_file():
            info = None if path.suffix == ".json" else sf.info(str(path)).frames if path.stat().st_size else 0
            results.append({"file": str(path.relative_to(root)), "frames": info})
    print(json.dumps(results))
''')


def run_harness(tmp_path: Path, model: Path, commands: list, timeout: float) -> tuple[list, list]:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    spec = {"root": str(tmp_path / "out"), "seed": 1234, "commands": commands, "model": str(model)}
    done = subprocess.run([sys.executable, str(script), json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, env={**ROOT_ENV, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(done.stdout.strip().splitlines()[-1])
    return [r for r in records if "attempt" in r], [r for r in records if "file" in r]


def interrupt_commands(tmp_path: Path, tries: int) -> list:
    prompt = {"1": {"class_type": "StableAudio_LoadAudio", "inputs": {"audio": "clip.wav"}},
              "2": {"class_type": "StableAudio_SaveAudio",
                    "inputs": {"audio": ["1", 0], "filename_prefix": "take", "format": "wav"}}}
    (tmp_path / "input").mkdir()
    sf.write(str(tmp_path / "input" / "clip.wav"), np.random.default_rng(0).uniform(-0.5, 0.5, (44100 * 5, 2)),
             44100)
    (tmp_path / "load_save.json").write_text(json.dumps(prompt))
    generate_cmd = ["generate", "rain", "--seconds", "0.5", "--steps", "2", "--seed", "1", "--threads", "1",
                    "-o", "{out}/take_{n}.wav"]
    run_cmd = ["run", str(tmp_path / "load_save.json"), "--quiet", "--threads", "1",
               "--input", str(tmp_path / "input"), "--output", "{out}"]
    return [[generate_cmd, tries], [run_cmd, tries]]


def check_interrupt_results(attempts: list, files: list) -> None:
    assert attempts, "no interrupted runs"
    names = [f["file"] for f in files]
    assert not [n for n in names if PARTIAL_PREFIX in n], names
    for entry in files:   # every file that exists is complete: the uninterrupted run's length
        if entry["file"].endswith(".json"):   # a sidecar only ever beside its audio file
            assert entry["file"][:-len(".json")] in names, entry
            continue
        reference = 22050 if entry["file"].startswith("cmd0") else 44100 * 5
        assert entry["frames"] == reference, entry
    during_write = [a for a in attempts if a["during_write"]]
    assert {a["signal"] for a in during_write} == {"SIGINT", "SIGTERM"}
    assert all(a["code"] in (130, 143) for a in during_write), during_write


def test_interrupts_during_the_write_leave_a_complete_file_or_none(tmp_path, bundled_stand_in_files):
    attempts, files = run_harness(tmp_path, bundled_stand_in_files, interrupt_commands(tmp_path, tries=2),
                                  timeout=240)
    check_interrupt_results(attempts, files)
    assert len(attempts) == 4


@pytest.mark.heavy
def test_sigint_and_sigterm_at_random_moments_of_generate_and_run_leave_complete_files_or_none(
        tmp_path, bundled_stand_in_files):
    attempts, files = run_harness(tmp_path, bundled_stand_in_files, interrupt_commands(tmp_path, tries=20),
                                  timeout=900)
    check_interrupt_results(attempts, files)
    assert len(attempts) == 40
    assert sum(a["code"] in (130, 143) for a in attempts) >= 20   # most landed before the run ended


CONCURRENT = textwrap.dedent('''
    """N processes save at the same moment with the same prefix through the Save Audio node."""
    import os, sys, time
    from pathlib import Path
    import torch
    from stable_audio_host.pack import load_pack
    from stable_audio_host.runtime import Folders, HostRuntime

    root, count = Path(sys.argv[1]), int(sys.argv[2])
    pack = load_pack(Path(sys.argv[3]))
    pack.module.set_host(HostRuntime(Folders(output=root), device="cpu", show_progress=False))
    node = pack.classes["StableAudio_SaveAudio"]()
    start = time.time() + 1.0
    children = []
    for i in range(count):
        pid = os.fork()
        if pid == 0:
            audio = {"waveform": torch.full((1, 2, 4000), (i + 1) / 100), "sample_rate": 8000}
            time.sleep(max(0.0, start - time.time()))   # all save at once
            try:
                node.save(audio, "same/prefix", "wav")
                os._exit(0)
            except BaseException:
                os._exit(1)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    print(codes)
''')


def test_eight_processes_saving_with_one_prefix_write_eight_distinct_complete_files(tmp_path):
    script = tmp_path / "save_race.py"
    script.write_text(CONCURRENT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "8", str(ROOT)],
                          capture_output=True, text=True, timeout=120, env=ROOT_ENV)
    assert done.returncode == 0 and done.stdout.strip() == str([0] * 8), done.stderr[-2000:]
    files = sorted((tmp_path / "out" / "same").iterdir())
    assert len(files) == 8 and leftovers(tmp_path / "out") == []
    levels = set()
    for path in files:
        data, rate = sf.read(str(path))
        assert data.shape == (4000, 2) and rate == 8000
        levels.add(round(float(data[0, 0]) * 100))
    assert levels == set(range(1, 9))   # each process's own audio, none overwritten


@pytest.mark.heavy
def test_eight_concurrent_runs_with_one_prefix_write_eight_files(tmp_path):
    prompt = {"1": {"class_type": "StableAudio_LoadAudio", "inputs": {"audio": "clip.wav"}},
              "2": {"class_type": "StableAudio_SaveAudio",
                    "inputs": {"audio": ["1", 0], "filename_prefix": "same", "format": "flac"}}}
    (tmp_path / "input").mkdir()
    sf.write(str(tmp_path / "input" / "clip.wav"), np.zeros((8000, 2)), 8000)
    (tmp_path / "w.json").write_text(json.dumps(prompt))
    command = [sys.executable, "-m", "stable_audio_host.cli", "run", str(tmp_path / "w.json"), "--quiet",
               "--threads", "1", "--input", str(tmp_path / "input"), "--output", str(tmp_path / "out")]
    processes = [subprocess.Popen(command, env=ROOT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(8)]
    assert [p.wait(timeout=300) for p in processes] == [0] * 8
    files = sorted((tmp_path / "out").glob("same_*.flac"))
    assert len(files) == 8 and all(sf.info(str(f)).frames == 8000 for f in files)


# --- later additions: the run command, memory, training checkpoints -----------------------------

def test_run_refuses_an_output_folder_it_cannot_write_before_running(tmp_path, capsys):
    from stable_audio_host.cli import main
    blocker = tmp_path / "file"
    blocker.write_text("x")
    workflow = tmp_path / "w.json"
    workflow.write_text("{}")
    assert main(["run", str(workflow), "--output", str(blocker / "out"), "--device", "banana"]) == 2
    assert "--device 'banana'" in capsys.readouterr().err
    assert main(["run", str(workflow), "--output", str(blocker / "out")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_running_out_of_memory_is_an_error_with_a_remedy(monkeypatch, capsys):
    from stable_audio_host import cli
    def exhausted(args):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 99 GB")
    monkeypatch.setattr(cli, "cmd_generate", exhausted)
    assert cli.main(["generate", "rain"]) == 2
    assert "out of memory; lower --batch or --window" in capsys.readouterr().err


def test_an_interrupted_training_checkpoint_leaves_no_temp_folder(tmp_path, monkeypatch):
    from stable_audio_core.training import state
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("safetensors.torch.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        state.write_checkpoint(tmp_path, 1, {"step": 1}, weights={"w": torch.zeros(2)})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == []


def test_load_audio_of_a_nan_file_is_an_error_naming_the_file_not_a_full_scale_save(pack_host):
    pack, output = pack_host
    data = np.zeros((100, 2), dtype=np.float32)
    data[:, 0] = np.inf
    sf.write(str(output.parent / "broken.wav"), data, 8000, subtype="FLOAT")
    pack_errors = importlib.import_module(pack.name + ".stable_audio_core.errors")
    with pytest.raises(pack_errors.AudioFileError, match="NaN/Inf value.* in the audio file .*broken.wav"):
        pack.classes["StableAudio_LoadAudio"]().load("broken.wav")
