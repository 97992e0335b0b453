"""Prompt datasets and the distributed k-repeat sampler that forms GRPO groups across processes."""

from __future__ import annotations

import os

import torch

from flow_grpo.errors import InputError


def iter_jsonl(path: str, error: type[Exception] = InputError):
    """(line number, parsed object) for each non-blank line of a jsonl file; bad JSON raises ``error`` naming
    the file and line."""
    import json

    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as decode_error:
                raise error(f"{path}:{number}: not valid JSON ({decode_error.msg})") from None


def read_prompt_file(path: str) -> list[str]:
    """One prompt per non-empty line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt file {path!r} not found")
    with open(path, encoding="utf-8") as handle:
        prompts = [line.strip() for line in handle if line.strip()]
    if not prompts:
        raise InputError(f"prompt file {path!r} holds no prompts")
    return prompts


class DistributedKRepeatSampler:
    """Yields, per call, this process's ``batch_size`` dataset indices for one sampling batch.

    Every process draws the same permutation (seeded with ``seed + counter``), takes the first
    ``num_replicas * batch_size / k`` indices, repeats each ``k`` times, shuffles them (same shuffle on all
    processes) and keeps its own contiguous slice. A prompt's ``k`` images therefore spread over processes,
    and the union over processes is every chosen prompt exactly ``k`` times.

    The only state is the counter, so ``state_dict``/``load_state_dict`` make a resumed run draw exactly the
    batches the uninterrupted run would have drawn.
    """

    def __init__(self, dataset_size: int, batch_size: int, k: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        total = num_replicas * batch_size
        if k < 1 or total % k:
            raise InputError(
                f"num_replicas * batch_size = {num_replicas} * {batch_size} = {total} must be a multiple of "
                f"the group size k = {k}"
            )
        if total // k > dataset_size:
            raise InputError(f"need {total // k} distinct prompts per batch but the dataset holds {dataset_size}")
        if not 0 <= rank < num_replicas:
            raise InputError(f"rank {rank} outside [0, {num_replicas})")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.k = k
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.counter = 0

    @property
    def prompts_per_batch(self) -> int:
        return self.num_replicas * self.batch_size // self.k

    def all_indices(self, counter: int) -> torch.Tensor:
        """The indices of every process for batch number ``counter``, shape [num_replicas, batch_size]."""
        generator = torch.Generator().manual_seed(self.seed + counter)
        chosen = torch.randperm(self.dataset_size, generator=generator)[: self.prompts_per_batch]
        repeated = chosen.repeat_interleave(self.k)
        shuffled = repeated[torch.randperm(len(repeated), generator=generator)]
        return shuffled.reshape(self.num_replicas, self.batch_size)

    def next_indices(self) -> list[int]:
        indices = self.all_indices(self.counter)[self.rank].tolist()
        self.counter += 1
        return indices

    def __iter__(self):
        while True:
            yield self.next_indices()

    def state_dict(self) -> dict:
        return {"counter": self.counter, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.counter = int(state["counter"])
        self.seed = int(state["seed"])


def group_ids(prompts: list[str], images: list[str] | None = None) -> list[int]:
    """The GRPO group of each prompt: the index of its first occurrence (duplicates share a group). With input
    images (an editing dataset) the key is the (instruction, image) pair: one instruction on two images is two
    groups."""
    first: dict = {}
    keys = prompts if images is None else list(zip(prompts, images))
    return [first.setdefault(key, i) for i, key in enumerate(keys)]


def load_input_image(path: str, size: tuple[int, int]):
    """An input image as ``[3, H, W]`` floats in [0, 1], resized (bicubic) to ``size = (H, W)`` when it differs."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"input image {path!r} not found")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"input image {path!r} cannot be read as an image ({error})") from None
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class PromptDataset:
    """The prompts of one split of a dataset folder, with per-prompt metadata.

    ``<folder>/<split>_metadata.jsonl`` (GenEval style: one JSON object per line with a ``prompt`` field, the
    whole object is the metadata) is used when present, else ``<folder>/<split>.txt`` (one prompt per line,
    metadata ``{}``).

    An editing dataset gives every line an ``image`` field too: the input image's path, relative to the folder
    (the prompt is then the instruction). :meth:`input_images` loads them; ``has_input_images`` says whether
    the dataset has them (all lines or none).
    """

    def __init__(self, folder: str, split: str):
        jsonl = os.path.join(folder, f"{split}_metadata.jsonl")
        txt = os.path.join(folder, f"{split}.txt")
        self.prompts: list[str] = []
        self.metadata: list[dict] = []
        if os.path.isfile(jsonl):
            for number, item in iter_jsonl(jsonl):
                if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                    raise InputError(f"{jsonl}:{number}: expected an object with a string field 'prompt'")
                self.prompts.append(item["prompt"])
                self.metadata.append(item)
            self.path = jsonl
        elif os.path.isfile(txt):
            self.prompts = read_prompt_file(txt)
            self.metadata = [{} for _ in self.prompts]
            self.path = txt
        else:
            raise FileNotFoundError(f"no {split} prompts in {folder!r}: expected {os.path.basename(jsonl)} or {os.path.basename(txt)}")
        if not self.prompts:
            raise InputError(f"{self.path} holds no prompts")
        self.folder = folder
        self._set_images()

    def _set_images(self) -> None:
        with_image = [isinstance(m.get("image"), str) for m in self.metadata]
        if any(with_image) and not all(with_image):
            line = with_image.index(False) + 1
            raise InputError(f"{self.path}:{line}: no 'image' field, but other lines have one (an editing dataset "
                             "gives every instruction its input image)")
        self.has_input_images = bool(with_image) and all(with_image)
        self.image_paths = [m["image"] for m in self.metadata] if self.has_input_images else None
        self.group_ids = group_ids(self.prompts, self.image_paths)
        self._image_cache: dict = {}

    def input_images(self, indices, size: tuple[int, int]):
        """The input images of dataset rows ``indices`` as ``[n, 3, H, W]`` in [0, 1] at ``size = (H, W)``, or
        None for a text-only dataset. Each file is read once."""
        if not self.has_input_images:
            return None
        images = []
        for i in indices:
            key = (i, tuple(size))
            if key not in self._image_cache:
                path = self.image_paths[i]
                path = path if os.path.isabs(path) else os.path.join(self.folder, path)
                self._image_cache[key] = load_input_image(path, size)
            images.append(self._image_cache[key])
        return torch.stack(images)

    @classmethod
    def from_prompts(cls, prompts: list[str], metadata: list[dict] | None = None) -> "PromptDataset":
        """A dataset held in memory (benchmarks, tests)."""
        dataset = cls.__new__(cls)
        dataset.prompts, dataset.path = list(prompts), "<memory>"
        dataset.metadata = list(metadata) if metadata is not None else [{} for _ in prompts]
        dataset.folder = "."
        dataset._set_images()
        return dataset

    def __len__(self) -> int:
        return len(self.prompts)
