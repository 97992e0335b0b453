"""The GenEval reward: detect the prompt's objects and score them with GenEval's rules.

Needs GenEval metadata per image (the datasets' ``*_metadata.jsonl``). Scores: the partial-credit score
by default; ``binary=True`` gives 1/0 correctness, official (``strict=False``) or exact counts
(``strict=True``). ``info`` holds ``correct``, ``strict_correct``, ``score`` and one column per tag
(``tag_counting``, ...; NaN for images of another tag). Options: ``backend`` (``transformers``, ``mmdet``,
``shapes``) and that backend's options, the thresholds ``confidence`` (0.3) and ``counting_confidence`` (0.9).
Run it behind the reward server by giving ``server_url`` instead.
"""

from __future__ import annotations

import numpy as np

from flow_grpo.images import to_pil
from flow_grpo.rewards.registry import register


@register("geneval")
def geneval(backend: str = "transformers", strict: bool = False, binary: bool = False, **options):
    from flow_grpo.geneval.metadata import validate
    from flow_grpo.geneval.scorer import GenEvalScorer

    scorer = GenEvalScorer(backend, **options)

    def score(images, prompts, metadata, options=None):
        request = dict(options or {})
        use_strict, use_binary = request.get("strict", strict), request.get("binary", binary)
        for i, meta in enumerate(metadata):
            validate(meta, f"metadata[{i}]")
        results = scorer(to_pil(images), metadata)
        if use_binary:
            scores = np.asarray([float(r["strict_correct"] if use_strict else r["correct"]) for r in results])
        else:
            scores = np.asarray([r["score"] for r in results])
        info = {key: np.asarray([r[key] for r in results], dtype=float)
                for key in results[0] if key == "correct" or key == "strict_correct" or key == "score" or key.startswith("tag_")}
        return scores, info

    return score
