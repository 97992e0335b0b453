"""Prompt datasets and the distributed k-repeat sampler that forms GRPO groups across processes."""

from __future__ import annotations

import os

import torch


def iter_jsonl(path: str, error: type[Exception] = ValueError):
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
        raise ValueError(f"prompt file {path!r} holds no prompts")
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
            raise ValueError(
                f"num_replicas * batch_size = {num_replicas} * {batch_size} = {total} must be a multiple of "
                f"the group size k = {k}"
            )
        if total // k > dataset_size:
            raise ValueError(f"need {total // k} distinct prompts per batch but the dataset holds {dataset_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
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


def group_ids(prompts: list[str]) -> list[int]:
    """The GRPO group of each prompt: the index of its text's first occurrence (duplicates share a group)."""
    first: dict[str, int] = {}
    return [first.setdefault(prompt, i) for i, prompt in enumerate(prompts)]


class PromptDataset:
    """The prompts of one split of a dataset folder, with per-prompt metadata.

    ``<folder>/<split>_metadata.jsonl`` (GenEval style: one JSON object per line with a ``prompt`` field, the
    whole object is the metadata) is used when present, else ``<folder>/<split>.txt`` (one prompt per line,
    metadata ``{}``).
    """

    def __init__(self, folder: str, split: str):
        jsonl = os.path.join(folder, f"{split}_metadata.jsonl")
        txt = os.path.join(folder, f"{split}.txt")
        self.prompts: list[str] = []
        self.metadata: list[dict] = []
        if os.path.isfile(jsonl):
            for number, item in iter_jsonl(jsonl):
                if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                    raise ValueError(f"{jsonl}:{number}: expected an object with a string field 'prompt'")
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
            raise ValueError(f"{self.path} holds no prompts")
        self.group_ids = group_ids(self.prompts)

    @classmethod
    def from_prompts(cls, prompts: list[str], metadata: list[dict] | None = None) -> "PromptDataset":
        """A dataset held in memory (benchmarks, tests)."""
        dataset = cls.__new__(cls)
        dataset.prompts, dataset.path = list(prompts), "<memory>"
        dataset.metadata = list(metadata) if metadata is not None else [{} for _ in prompts]
        dataset.group_ids = group_ids(dataset.prompts)
        return dataset

    def __len__(self) -> int:
        return len(self.prompts)
