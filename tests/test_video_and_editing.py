"""Videos and edits outside the model: rewards on videos (frame scoring, temporal consistency), MP4 / GIF
files a player opens, the shapes world's editing task and its reward, editing datasets, and the checks that
stop a run whose samples or dataset do not fit its family."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, load_script, read_video_frames
from flow_grpo.data import PromptDataset
from flow_grpo.images import to_tensor
from flow_grpo.rewards import RewardError, build_reward, multi_score
from flow_grpo.rewards.registry import score_frames
from flow_grpo.shapes.detector import ShapesDetector
from flow_grpo.shapes.edits import EDIT_KINDS, check_edit, make_edit, scene_image
from flow_grpo import videos

EDITS = os.path.join(REPO, "dataset", "shapes_edit")


def ramp_video(count=2, frames=9, height=8, width=12):
    """Frame t of video n is uniformly (t + n) / 20: known brightness per frame."""
    values = (torch.arange(frames)[None] + torch.arange(count)[:, None]).float() / 20
    return values[:, :, None, None, None].expand(count, frames, 3, height, width).clone()


# ---- rewards on videos ----

def test_image_rewards_score_every_kth_frame_and_average():
    clips = ramp_video()
    brightness = build_reward("brightness")
    scores, _ = score_frames(brightness, clips, ["a", "b"], [{}, {}], frame_interval=4)
    # frames 0, 4, 8: mean of (t + n) / 20
    np.testing.assert_allclose(scores, [(0 + 4 + 8) / 3 / 20, (1 + 5 + 9) / 3 / 20], rtol=0, atol=1e-7)
    every, _ = score_frames(brightness, clips, ["a", "b"], [{}, {}], frame_interval=1)
    np.testing.assert_allclose(every, [4 / 20, 5 / 20], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="at least 1"):
        score_frames(brightness, clips, ["a", "b"], [{}, {}], frame_interval=0)
    # a reward's per-image info is averaged per video the same way
    jpeg = build_reward("jpeg_compressibility")
    _, info = score_frames(jpeg, clips, ["a", "b"], [{}, {}], frame_interval=4)
    frames = clips[:, ::4]  # [2 videos, 3 frames, C, H, W]
    _, per_frame = jpeg(frames.reshape(6, *frames.shape[2:]), ["a"] * 6, [{}] * 6)
    np.testing.assert_allclose(info["size_kb"], per_frame["size_kb"].reshape(2, 3).mean(axis=1))


def test_frame_rewards_see_each_videos_prompt():
    clips = torch.zeros(2, 5, 3, 4, 4)
    clips[0, :, 0] = 1.0  # red
    clips[1, :, 2] = 1.0  # blue
    scores, _ = score_frames(build_reward("prompt_colour"), clips, ["a red ball", "a blue ball"], [{}, {}], frame_interval=2)
    np.testing.assert_allclose(scores, [1.0, 1.0], atol=1e-6)


def test_temporal_consistency_closed_form():
    fn = build_reward("temporal_consistency")
    clips = ramp_video()  # consecutive frames differ by 1/20 everywhere
    scores, info = fn(clips, ["a", "b"], [{}, {}])
    np.testing.assert_allclose(scores, [1 - 1 / 20] * 2, atol=1e-7)
    still = torch.rand(1, 1, 3, 8, 8).expand(1, 6, 3, 8, 8)
    assert fn(still, ["a"], [{}])[0][0] == pytest.approx(1.0)
    jump = torch.zeros(1, 4, 3, 8, 8)
    jump[0, 2:] = 1.0  # one cut from black to white: changes 0, 1, 0
    scores, info = fn(jump, ["a"], [{}])
    assert scores[0] == pytest.approx(1 - 1 / 3) and info["largest_jump"][0] == pytest.approx(1.0)
    # independent uniform frames: E|U - V| = 1/3
    noise = torch.rand(4, 16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert fn(noise, list("abcd"), [{}] * 4)[0].mean() == pytest.approx(2 / 3, abs=0.01)


def test_multi_score_mixes_frame_and_video_rewards():
    reward = multi_score({"brightness": 1.0, "temporal_consistency": 0.5}, frame_interval=4)
    columns, _ = reward(ramp_video(), ["a", "b"], [{}, {}])
    np.testing.assert_allclose(columns["brightness"], [0.2, 0.25], atol=1e-7)
    np.testing.assert_allclose(columns["temporal_consistency"], [0.95, 0.95], atol=1e-7)
    np.testing.assert_allclose(columns["avg"], columns["brightness"] + 0.5 * columns["temporal_consistency"])
    with pytest.raises(RewardError, match="'temporal_consistency' scores videos"):
        reward(torch.rand(2, 3, 8, 8), ["a", "b"], [{}, {}])


# ---- video files ----

def test_mp4_opens_with_ffmpeg_and_holds_the_frames(tmp_path):
    clip = ramp_video(1, frames=9, height=31, width=47)[0]  # odd sizes: padded to even for MPEG-4
    path = videos.write_video(clip, str(tmp_path / "clip.mp4"), fps=8)
    assert path.endswith(".mp4") and os.path.getsize(path) > 0
    with open(path, "rb") as handle:
        assert handle.read(12)[4:8] == b"ftyp"  # an ISO media file
    frames = read_video_frames(path)  # FFmpeg's decoder, through OpenCV
    assert frames.shape == (9, 32, 48, 3)
    levels = frames[:, :31, :47].reshape(9, -1).mean(1) / 255
    np.testing.assert_allclose(levels, np.arange(9) / 20, atol=0.02)  # lossy, but the ramp is there
    assert not [name for name in os.listdir(tmp_path) if "partial" in name]


def test_gif_where_opencv_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(videos, "video_encoder", lambda: "gif")
    clip = ramp_video(1, frames=5)[0]
    path = videos.write_video(clip, str(tmp_path / "clip.mp4"))
    assert path.endswith(".gif")
    frames = read_video_frames(path)
    assert frames.shape == (5, 8, 12, 3)
    np.testing.assert_allclose(frames.reshape(5, -1).mean(1) / 255, np.arange(5) / 20, atol=0.01)


def test_save_samples_writes_a_grid_clip_and_a_frame_strip(tmp_path):
    written = videos.save_samples(ramp_video(3), str(tmp_path / "eval.png"), cols=2, labels=["a", "b", "c"])
    clip, strip = written
    assert clip.endswith(".mp4") and read_video_frames(clip).shape[:1] == (9,)
    with Image.open(strip) as image:
        assert image.size == (150 + 5 * 96, 16 + 3 * 64)  # 5 frames shown (0, 2, 4, 6, 8), 12:8 cells of width 96
    assert videos.strip_frames(9) == [0, 2, 4, 6, 8] and videos.strip_frames(3) == [0, 1, 2]
    assert videos.save_samples(torch.rand(2, 3, 8, 8), str(tmp_path / "images.png")) == [str(tmp_path / "images.png")]


# ---- the shapes world's editing task ----

def dataset_images(dataset, field):
    return to_tensor([scene_image(m[field]) for m in dataset.metadata])


@pytest.mark.parametrize("split", ["train", "test"])
def test_edit_reward_on_ground_truth_and_unedited_inputs(split):
    """The edited scene scores 1 (>= 0.97 required), the unedited input 0, for every kind of edit."""
    dataset = PromptDataset(EDITS, split)
    reward = multi_score({"shapes_edit": 1.0})
    truth, info = reward(dataset_images(dataset, "target"), dataset.prompts, dataset.metadata)
    assert truth["shapes_edit"].mean() >= 0.97 and info["shapes_edit_correct"].mean() >= 0.97
    for kind in EDIT_KINDS:
        assert np.nanmean(info[f"shapes_edit_kind_{kind}"]) >= 0.97
    unedited, info = reward(dataset.input_images(range(len(dataset)), (32, 32)), dataset.prompts, dataset.metadata)
    assert unedited["shapes_edit"].max() == 0 and info["shapes_edit_edit"].max() == 0
    assert info["shapes_edit_preservation"].mean() > 0.5  # what was there is still there: only the edit is missing


def test_edit_checks_by_hand():
    detector = ShapesDetector()
    edit = {"prompt": "make the circle red", "edit": {"kind": "recolour", "shape": "circle", "color": "red"},
            "source": [["circle", "blue", 9, 9, 10], ["square", "green", 22, 22, 10]],
            "target": [["circle", "red", 9, 9, 10], ["square", "green", 22, 22, 10]]}

    def check(objects):
        return check_edit(detector.analyse(scene_image(objects))["detections"], edit)

    assert check(edit["target"]).score == 1 and check(edit["target"]).correct
    assert check(edit["source"]).score == 0
    moved = check([["circle", "red", 9, 9, 10], ["square", "green", 22, 12, 10]])  # the untouched square moved
    assert moved.edit == 1 and moved.preservation == 0 and not moved.correct
    extra = check(edit["target"] + [["cross", "black", 24, 6, 8]])  # one object too many
    assert extra.edit == 1 and extra.preservation == pytest.approx(1 / 2)
    assert check([["circle", "red", 9, 9, 10]]).preservation == 0  # the square is gone
    add = {"edit": {"kind": "add", "shape": "square", "color": "blue", "relation": "left of", "anchor": "cross"},
           "source": [["cross", "red", 22, 16, 10]], "target": [["cross", "red", 22, 16, 10], ["square", "blue", 8, 16, 10]]}
    found = detector.analyse(scene_image([["cross", "red", 22, 16, 10], ["square", "blue", 8, 18, 9]]))["detections"]
    assert check_edit(found, add).correct  # any placement in the relation counts, not only the target's
    wrong_side = detector.analyse(scene_image([["cross", "red", 12, 16, 10], ["square", "blue", 26, 16, 9]]))["detections"]
    assert check_edit(wrong_side, add).edit == 0


def test_make_edit_targets_satisfy_their_instruction():
    import random

    rng = random.Random(3)
    detector = ShapesDetector()
    for kind in EDIT_KINDS * 10:
        item = make_edit(rng, kind)
        assert item["tag"] == kind and item["edit"]["shape"] in item["prompt"]
        assert check_edit(detector.analyse(scene_image(item["target"]))["detections"], item).correct
    with pytest.raises(ValueError, match="unknown edit kind"):
        make_edit(rng, "rotate")


def test_edit_pixels_reward_and_missing_metadata():
    dataset = PromptDataset(EDITS, "test")
    pixels = build_reward("shapes_edit_pixels")
    scores, _ = pixels(dataset_images(dataset, "target"), dataset.prompts, dataset.metadata)
    np.testing.assert_allclose(scores, 1.0, atol=1e-6)
    scores, _ = pixels(torch.full((1, 3, 64, 64), 128 / 255), ["x"], [{**dataset.metadata[0]}])  # resized to 32 first
    assert 0.5 < scores[0] < 1.0
    with pytest.raises(ValueError, match="need the metadata of dataset/shapes_edit"):
        build_reward("shapes_edit")(torch.rand(1, 3, 32, 32), ["x"], [{"prompt": "x"}])


# ---- editing datasets ----

def write_dataset(folder, lines):
    os.makedirs(folder / "images", exist_ok=True)
    with open(folder / "train_metadata.jsonl", "w") as handle:
        handle.write("\n".join(json.dumps(line) for line in lines) + "\n")


def test_editing_dataset_loads_images_and_groups_by_instruction_and_image(tmp_path):
    write_dataset(tmp_path, [{"prompt": "make it blue", "image": "images/a.png"}, {"prompt": "make it blue", "image": "images/b.png"},
                             {"prompt": "make it blue", "image": "images/a.png"}])
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "images" / "a.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "images" / "b.png")
    dataset = PromptDataset(str(tmp_path), "train")
    assert dataset.has_input_images and dataset.group_ids == [0, 1, 0]
    images = dataset.input_images([0, 1], (16, 16))
    assert images.shape == (2, 3, 16, 16)
    torch.testing.assert_close(images[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(images[1, :, 5, 5], torch.tensor([0.0, 0.0, 1.0]))  # resized from 8 x 8
    assert not PromptDataset(os.path.join(REPO, "dataset", "tiny"), "train").has_input_images


def test_bad_editing_datasets_name_their_problem(tmp_path):
    write_dataset(tmp_path, [{"prompt": "a", "image": "images/a.png"}, {"prompt": "b"}])
    with pytest.raises(ValueError, match=r"train_metadata.jsonl:2: no 'image' field"):
        PromptDataset(str(tmp_path), "train")
    write_dataset(tmp_path, [{"prompt": "a", "image": "images/a.png"}, {"prompt": "b", "image": "images/missing.png"}])
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    dataset = PromptDataset(str(tmp_path), "train")
    with pytest.raises(ValueError, match="a.png' cannot be read as an image"):
        dataset.input_images([0], (8, 8))
    with pytest.raises(FileNotFoundError, match="missing.png' not found"):
        dataset.input_images([1], (8, 8))


def test_runs_whose_samples_or_data_do_not_fit_the_family_stop_early(tmp_path, capsys):
    train = load_script("scripts/train.py")
    tiny = os.path.join(REPO, "config", "tiny.py")
    common = [f"--config.logdir={tmp_path}", "--config.progress=false", "--config.num_epochs=1"]
    assert train.main(["--config", f"{tiny}:tiny_flux", "--config.num_frames=9", *common]) == 2
    assert "flux makes images, not videos" in capsys.readouterr().err
    assert train.main(["--config", f"{tiny}:tiny_wan", "--config.num_frames=8", *common]) == 2
    assert "num_frames - 1 must be a multiple of 4" in capsys.readouterr().err
    assert train.main(["--config", f"{tiny}:tiny", f"--config.dataset={EDITS}", "--config.resolution=32", *common]) == 2
    assert "editing dataset" in capsys.readouterr().err
    assert train.main(["--config", f"{tiny}:tiny_kontext", f"--config.dataset={os.path.join(REPO, 'dataset', 'tiny')}", *common]) == 2
    assert "flux_kontext edits images" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing written before the checks
