"""The OCR and PickScore prompt sets: the shipped files are their generators' output at the paper's sizes,
splits are disjoint, and Pick-a-Pic captions are read with the datasets library from a local folder."""

import os
import re

import pytest

from conftest import REPO, load_script
from flow_grpo.data import PromptDataset
from flow_grpo.rewards.ocr import target_text

make_ocr = load_script("dataset/make_ocr_prompts.py")
make_pickscore = load_script("dataset/make_pickscore_prompts.py")


def lines(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_shipped_ocr_prompts_are_the_generators_output(tmp_path):
    assert make_ocr.main(["--out", str(tmp_path)]) == 0  # the defaults: seed 0, 20,000 / 1,000
    for split, size in (("train", 20_000), ("test", 1_000)):
        shipped = lines(os.path.join(REPO, "dataset", "ocr", f"{split}.txt"))
        assert shipped == lines(tmp_path / f"{split}.txt") and len(shipped) == size
    dataset = PromptDataset(os.path.join(REPO, "dataset", "ocr"), "train")  # what config/grpo.py's OCR configs read
    assert len(dataset) == 20_000


def test_ocr_prompts_hold_one_short_quoted_text_and_test_texts_are_new():
    train = lines(os.path.join(REPO, "dataset", "ocr", "train.txt"))
    test = lines(os.path.join(REPO, "dataset", "ocr", "test.txt"))
    texts = {}
    for split, prompts in (("train", train), ("test", test)):
        assert all(len(re.findall(r'"[^"]*"', p)) == 1 for p in prompts)  # exactly one quoted text
        texts[split] = [target_text(p) for p in prompts]  # what the OCR reward compares with
        assert all(1 <= len(t.split()) <= 4 for t in texts[split])
        assert len({t.lower() for t in texts[split]}) == len(prompts)  # every text once
    assert not {t.lower() for t in texts["train"]} & {t.lower() for t in texts["test"]}
    word_counts = {n: sum(len(t.split()) == n for t in texts["train"]) for n in (1, 2, 3, 4)}
    assert all(count > 0 for count in word_counts.values()), word_counts
    assert len({p.split('"')[0][:25] for p in train}) > 100  # varied surfaces, places and styles


def test_ocr_generator_is_deterministic_and_seeded():
    a, b, c = (make_ocr.make_splits(seed, 300, 30) for seed in (3, 3, 4))
    assert a == b and a != c


def test_shipped_pickscore_prompts_are_the_generators_output(tmp_path):
    assert make_pickscore.main(["--out", str(tmp_path)]) == 0
    shipped = {}
    for split, size in (("train", 25_000), ("test", 2_048)):
        shipped[split] = lines(os.path.join(REPO, "dataset", "pickscore", f"{split}.txt"))
        assert shipped[split] == lines(tmp_path / f"{split}.txt") and len(shipped[split]) == size
    assert not set(shipped["train"]) & set(shipped["test"])
    assert len(set(shipped["train"])) == 25_000


def test_pickapic_captions_from_a_local_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    captions = [f"caption number {i}" for i in range(40)]
    noisy = captions + ["  caption   number 3 ", "CAPTION NUMBER 5", "", "   ", None, "a\nnew  line"]
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"caption": noisy, "other": list(range(len(noisy)))})})
    folder = tmp_path / "pickapic"
    data.save_to_disk(str(folder))
    out = tmp_path / "out"
    argv = ["--source", "pickapic", "--dataset", str(folder), "--train", "0", "--test", "8", "--out", str(out)]
    assert make_pickscore.main(argv) == 0
    train, test = lines(out / "train.txt"), lines(out / "test.txt")
    assert len(test) == 8 and len(train) == 41 - 8  # 40 unique captions and "a new line"; blanks, None, repeats dropped
    assert not set(train) & set(test) and "a new line" in train + test
    assert set(train + test) == set(captions) | {"a new line"}
    assert make_pickscore.main(argv + ["--out", str(tmp_path / "again")]) == 0  # deterministic for the seed
    assert lines(tmp_path / "again" / "test.txt") == test
    with pytest.raises(SystemExit, match="no column 'prompt'"):
        make_pickscore.main(argv + ["--column", "prompt"])
    with pytest.raises(SystemExit, match="splits"):
        make_pickscore.main(argv + ["--split", "validation"])
    with pytest.raises(SystemExit, match="not enough"):
        make_pickscore.main([*argv[:6], "--test", "100", "--out", str(out)])
