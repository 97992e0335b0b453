import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the tests never download: a hub model that is not here fails at once instead of after the hub client's retries
# (set before anything imports huggingface_hub, which reads it once)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flow_grpo.backbones import BUILTIN  # noqa: E402 (after HF_HUB_OFFLINE: it imports huggingface_hub)


def tiny_frame_size(family) -> tuple[int, int, int]:
    """(height, width, frames) the tests and config/tiny.py run a family's tiny model at (``family``: its Backbone
    class or an instance): videos of 9 frames of a non-square 32 x 48, editing at the edits' 32 px, else 64 px."""
    if family.modality == "video":
        return 32, 48, 9
    return (32, 32, 1) if family.takes_input_image else (64, 64, 1)


def load_script(relative_path: str):
    """Import a script under scripts/ (or elsewhere) as a module, without running its main."""
    path = os.path.join(REPO, relative_path)
    name = "_script_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo_root():
    return REPO


class TrainedRuns:
    """``scripts/train.py`` runs shared by the tests that only read what a run wrote (the suite's budget: one
    run per distinct command, not one per test). ``get(config_spec, *overrides)`` runs the command once per
    session, in a folder of its own, asserts it exited 0, and returns the run folder; the run's stdout is kept
    as ``printed[run_dir]``. Tests must not write into a shared run's folder."""

    def __init__(self, root):
        self.root = root
        self.runs: dict[tuple, str] = {}
        self.printed: dict[str, str] = {}

    def get(self, config_spec: str, *overrides: str) -> str:
        import contextlib
        import io

        key = (config_spec, *overrides)
        if key not in self.runs:
            logdir = os.path.join(self.root, f"run{len(self.runs)}")
            train = sys.modules.get("_script_train") or load_script("scripts/train.py")
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = train.main(["--config", config_spec, f"--config.logdir={logdir}", "--config.progress=false", *overrides])
            assert code == 0, f"{key} exited {code}:\n{printed.getvalue()[-3000:]}"
            (name,) = os.listdir(logdir)
            self.runs[key] = os.path.join(logdir, name)
            self.printed[self.runs[key]] = printed.getvalue()
        return self.runs[key]


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    return TrainedRuns(str(tmp_path_factory.mktemp("trained_runs")))


TINY_CONFIGS = os.path.join(REPO, "config", "tiny.py")
# the two-process runs (accelerate launch, 2 CPU processes on gloo), one launch for all: name -> its overrides; every
# family but SD3 by its tiny model's name, which is its config/tiny.py run
TWO_PROCESS_RUNS = {
    "tiny": ["--config.num_epochs=24"],  # tests/test_train_sd3.py: groups, advantages and learning
    **{name: ["--config.num_epochs=3", "--config.eval_freq=100"]  # tests/test_train_families.py
       for name in (model.removeprefix("builtin:") for model, cls in BUILTIN.items() if cls.family != "sd3")},
}


@pytest.fixture(scope="session")
def two_process_runs(tmp_path_factory):
    """``accelerate launch --multi_gpu --num_processes 2`` of tests/train_in_sequence.py over TWO_PROCESS_RUNS:
    name -> (run folder, what the main process printed for that run). One launch, so the processes' start-up
    (imports, the gloo group) is paid once for the five runs."""
    import json
    import subprocess

    root = tmp_path_factory.mktemp("two_processes")
    runs = [["--config", f"{TINY_CONFIGS}:{name}", f"--config.logdir={root}", "--config.progress=false", *overrides]
            for name, overrides in TWO_PROCESS_RUNS.items()]
    (root / "runs.json").write_text(json.dumps(runs))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
               os.path.join(REPO, "tests", "train_in_sequence.py"), str(root / "runs.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.split("=== run ")[1:]
    assert len(printed) == len(runs), result.stdout[-3000:]
    return {name: (root / name, text) for name, text in zip(TWO_PROCESS_RUNS, printed)}


@pytest.fixture(scope="session")
def tiny_pipeline():
    """A tiny SD3 pipeline (real diffusers classes); tests must not modify it (use fresh_tiny_pipeline)."""
    from flow_grpo.backbones.sd3.tiny import build_tiny_sd3_pipeline

    pipeline = build_tiny_sd3_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def fresh_tiny_pipeline():
    from flow_grpo.backbones.sd3.tiny import build_tiny_sd3_pipeline

    pipeline = build_tiny_sd3_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory, tiny_pipeline):
    """The tiny pipeline written to disk in diffusers layout."""
    path = tmp_path_factory.mktemp("tiny-sd3")
    tiny_pipeline.save_pretrained(str(path))
    return str(path)


def read_video_frames(path: str):
    """The frames of an MP4 (through OpenCV's FFmpeg decoder) or GIF file as ``[F, H, W, 3]`` uint8: how the
    tests check that what ``flow_grpo.videos.write_video`` wrote is a video a player can open."""
    import numpy as np

    if path.endswith(".gif"):
        from PIL import Image, ImageSequence

        with Image.open(path) as image:
            return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])
    import cv2

    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    capture.release()
    if not frames:
        raise ValueError(f"{path!r}: no frames could be decoded")
    return np.stack(frames)


# ---- the suite's budget (docs/testing.md): what make test-fast leaves out, and the slow tests' reasons ----
SLOW_UNMARKED_S = 2.0  # a test this slow belongs to `make test`, not `make test-fast`: mark it slow
EXPLAINED_S = 20.0  # a test this slow says why in its docstring
_DOCSTRINGS: dict[str, str] = {}
_SLOW_MARKED: set[str] = set()


def pytest_collection_modifyitems(items):
    for item in items:
        function = getattr(item, "function", None)
        _DOCSTRINGS[item.nodeid] = (function.__doc__ or "") if function is not None else ""
        if item.get_closest_marker("slow"):
            _SLOW_MARKED.add(item.nodeid)


def pytest_terminal_summary(terminalreporter):
    """Name the tests that break the budget's two rules (a note, not a failure: timings vary by machine)."""
    totals: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) in ("setup", "call", "teardown") and hasattr(report, "duration"):
                totals[report.nodeid] = totals.get(report.nodeid, 0.0) + report.duration
    unmarked = sorted((s, n) for n, s in totals.items() if s > SLOW_UNMARKED_S and n not in _SLOW_MARKED)
    unexplained = sorted((s, n) for n, s in totals.items() if s > EXPLAINED_S and not _DOCSTRINGS.get(n, "").strip())
    for title, rows in ((f"over {SLOW_UNMARKED_S:g} s but not marked slow (make test-fast runs them)", unmarked),
                        (f"over {EXPLAINED_S:g} s without a docstring that says why", unexplained)):
        if rows:
            terminalreporter.write_sep("-", f"budget: {len(rows)} test(s) {title}")
            for seconds, nodeid in rows[::-1]:
                terminalreporter.write_line(f"{seconds:7.2f}s {nodeid}")
