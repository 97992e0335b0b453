"""Detector + scoring rules: GenEval results for a batch of images. Used by the evaluator and the reward."""

from __future__ import annotations

from flow_grpo.geneval.detectors import build_detector
from flow_grpo.geneval.scoring import (
    CONFIDENCE_THRESHOLD,
    COUNTING_THRESHOLD,
    MAX_OBJECTS,
    filter_detections,
    score_image,
)


class GenEvalScorer:
    def __init__(self, backend: str = "transformers", confidence: float = CONFIDENCE_THRESHOLD,
                 counting_confidence: float = COUNTING_THRESHOLD, max_objects: int = MAX_OBJECTS, **detector_options):
        self.detector = build_detector(backend, **detector_options)
        self.confidence = confidence
        self.counting_confidence = counting_confidence
        self.max_objects = max_objects

    def __call__(self, images, metadata) -> list[dict]:
        """``images``: PIL images; ``metadata``: GenEval metadata objects, one per image."""
        results = []
        for image, meta, raw in zip(images, metadata, self.detector.detect(list(images))):
            detections = filter_detections(raw, meta, self.confidence, self.counting_confidence, self.max_objects)

            def colour_fn(objects, classname, image=image):
                return self.detector.colours(image, objects, classname)

            results.append(score_image(detections, meta, colour_fn))
        return results
