from collections import Counter

import pytest

from flow_grpo.data import DistributedKRepeatSampler, read_prompt_file


@pytest.mark.parametrize("num_replicas,batch_size,k", [(1, 8, 4), (2, 6, 4), (4, 4, 8), (3, 4, 2)])
def test_k_repeat_groups_spread_over_processes(num_replicas, batch_size, k):
    samplers = [DistributedKRepeatSampler(50, batch_size, k, num_replicas, rank, seed=7) for rank in range(num_replicas)]
    for _ in range(5):
        per_rank = [s.next_indices() for s in samplers]
        assert all(len(r) == batch_size for r in per_rank)
        counts = Counter(i for r in per_rank for i in r)
        assert set(counts.values()) == {k}
        assert len(counts) == num_replicas * batch_size // k


def test_k_repeat_changes_between_batches_and_resumes_exactly():
    a = DistributedKRepeatSampler(100, 8, 4, seed=1)
    first = [a.next_indices() for _ in range(3)]
    assert first[0] != first[1]
    state = a.state_dict()
    expected = [a.next_indices() for _ in range(3)]
    b = DistributedKRepeatSampler(100, 8, 4, seed=999)
    b.load_state_dict(state)
    assert [b.next_indices() for _ in range(3)] == expected


def test_k_repeat_errors():
    with pytest.raises(ValueError, match="multiple of"):
        DistributedKRepeatSampler(10, 6, 4)
    with pytest.raises(ValueError, match="distinct prompts"):
        DistributedKRepeatSampler(3, 16, 4)


def test_read_prompt_file(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a cat\n\n  a dog \n")
    assert read_prompt_file(str(path)) == ["a cat", "a dog"]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_prompt_file(str(tmp_path / "missing.txt"))
