"""scripts/pretrain_shapes.py at toy sizes: the text encoders trained jointly, resumed from their checkpoint,
saved as the pipeline's (their EMA), and a resume with the other setting refused by name."""

import json

import pytest
import torch

from conftest import load_script

pytestmark = pytest.mark.slow  # training runs and subprocesses: make test runs this file, make test-fast does not

pretrain_shapes = load_script("scripts/pretrain_shapes.py")
TOY = ["--threads", "1", "--vae-steps", "2", "--vae-batch", "4", "--dataset-size", "32", "--batch", "8",
       "--layers", "1", "--heads", "1", "--head-dim", "8", "--no-exemplars", "--eval-images", "1",
       "--lr", "0.2"]  # in the 200-step warm-up: steps of 1e-3, 2e-3, 3e-3


def pretrain(tmp_path, capsys, *extra) -> str:
    """One invocation of the script in this process (as the command line would run it); what it printed."""
    threads = torch.get_num_threads()  # --threads 1 must not slow the rest of the suite
    try:
        pretrain_shapes.main(["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), *TOY, *extra])
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


def test_text_encoders_train_jointly_resume_and_ship_as_their_ema(tmp_path, capsys):
    from diffusers import StableDiffusion3Pipeline

    from flow_grpo.backbones.sd3.tiny import TinySD3Config, build_tiny_sd3_pipeline
    from flow_grpo.shapes.render import RESOLUTION

    pretrain(tmp_path, capsys, "--train-text-encoders", "--steps", "1", "--eval-every", "1")
    state = torch.load(tmp_path / "work" / "transformer_state.pt", weights_only=True)
    assert state["step"] == 1 and set(state["text_encoders"]) == {"text_encoder", "text_encoder_2", "text_encoder_3"}
    # resumes at step 1; checkpoints between evaluations with --save-every
    resumed = pretrain(tmp_path, capsys, "--train-text-encoders", "--steps", "3", "--eval-every", "2", "--save-every", "1")
    assert [line for line in resumed.splitlines() if line.startswith("checkpoint")] == \
        ["checkpoint at step 2", "checkpoint at step 3"]
    state = torch.load(tmp_path / "work" / "transformer_state.pt", weights_only=True)
    assert state["step"] == 3

    rows = [json.loads(line) for line in open(tmp_path / "work" / "eval_history.jsonl")]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(row["held_out_loss_unconditional"] > 0 and 0 <= row["overall"] <= 1 for row in rows)
    # the shipped record: the command that made it and every invocation's evaluations
    record = json.load(open(tmp_path / "out" / "pretraining.json"))
    assert record["command"].startswith("python scripts/pretrain_shapes.py --work ")
    assert record["command"].endswith("--train-text-encoders --steps 3 --eval-every 2 --save-every 1")
    assert record["transformer_steps"] == 3 and record["eval_history"] == rows

    initial = build_tiny_sd3_pipeline(TinySD3Config(resolution=RESOLUTION, clip_max_length=16, t5_max_length=16), seed=0)
    shipped = StableDiffusion3Pipeline.from_pretrained(str(tmp_path / "out"))
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        start = getattr(initial, name).state_dict()
        # three Adam steps of 1e-3, 2e-3 and 3e-3 move trained weights by up to 6e-3; weight decay alone, by < 1e-5
        moved = max(float((state["text_encoders"][name][k] - start[k]).abs().max()) for k in start)
        assert moved > 2e-3, f"{name} did not train: its weights moved {moved:.1e}"
        for key, value in getattr(shipped, name).state_dict().items():  # the pipeline holds the EMA, not the raw weights
            torch.testing.assert_close(value, state["text_encoders_ema"][name][key])
        # EMA 0.999 after three steps: within a few thousandths of the way from the start to the raw weights
        ema_moved = max(float((state["text_encoders_ema"][name][k] - start[k]).abs().max()) for k in start)
        assert 0 < ema_moved < 0.01 * moved

    # --losses-only recomputes the last row's losses from the checkpoint: the same values, merged in place
    last = dict(rows[-1])
    for key in ("held_out_loss", "held_out_loss_unconditional"):
        rows[-1].pop(key)
    (tmp_path / "work" / "eval_history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    pretrain(tmp_path, capsys, "--train-text-encoders", "--steps", "3", "--losses-only")
    merged = [json.loads(line) for line in open(tmp_path / "work" / "eval_history.jsonl")]
    assert len(merged) == 3 and merged[-1] == pytest.approx(last)

    with pytest.raises(SystemExit) as refused:  # the same work folder without the flag
        pretrain(tmp_path, capsys, "--steps", "4")
    assert "--train-text-encoders" in str(refused.value) and "transformer_state.pt" in str(refused.value)
