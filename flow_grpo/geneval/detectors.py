"""Object detectors for GenEval scoring. Each backend turns images into ``{class: [Detection]}``.

- ``transformers``: an instance-segmentation model (Mask2Former by default) through ``transformers``, and
  CLIP zero-shot colour classification of each object's masked crop pasted on grey (#999), with GenEval's
  three prompt templates. Real checkpoints: ``detector_model="facebook/mask2former-swin-small-coco-instance"``,
  ``clip_model="openai/clip-vit-large-patch14"`` (hub ids or local folders).
- ``mmdet``: GenEval's official Mask2Former through mmdetection 2.x (optional; ``config`` and ``checkpoint``
  paths), with the same CLIP colour classifier.
- ``shapes``: the analytic detector of the shapes world (``flow_grpo.shapes``); colours are exact.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from flow_grpo.geneval.metadata import COLORS
from flow_grpo.geneval.scoring import Detection

BACKENDS = ("transformers", "mmdet", "shapes")
# COCO label names of the transformers checkpoints that GenEval spells differently
GENEVAL_NAMES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard", "motorbike": "motorcycle",
                 "aeroplane": "airplane", "sofa": "couch", "diningtable": "dining table", "tvmonitor": "tv", "pottedplant": "potted plant"}
COLOUR_TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")


def _device(device):
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class ClipColourClassifier:
    """Zero-shot colour of an object: CLIP on the object's masked crop over grey, against GenEval's templates."""

    def __init__(self, clip_model: str, device: str | None = None):
        from flow_grpo.rewards.clip_common import ClipEmbedder

        self.clip = ClipEmbedder(clip_model, device=_device(device))
        self.classifiers: dict[str, torch.Tensor] = {}

    def _classifier(self, classname: str) -> torch.Tensor:
        if classname not in self.classifiers:
            weights = []
            for colour in COLORS:
                embeddings = self.clip.texts([t.format(c=colour, cls=classname) for t in COLOUR_TEMPLATES])
                weights.append(torch.nn.functional.normalize(embeddings.mean(0), dim=0))
            self.classifiers[classname] = torch.stack(weights)
        return self.classifiers[classname]

    def __call__(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]:
        from flow_grpo.images import to_tensor

        crops = []
        grey = Image.new("RGB", image.size, (153, 153, 153))
        for obj in objects:
            composite = Image.composite(image, grey, Image.fromarray(obj.mask.astype(np.uint8) * 255)) if obj.mask is not None else image
            box = [int(round(v)) for v in obj.box[:4]]
            crop = composite.crop((box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1))).resize((224, 224))
            crops.append(crop)
        embeddings = self.clip.images(to_tensor(crops))
        return [COLORS[i] for i in (embeddings @ self._classifier(classname).T).argmax(1).tolist()]


class TransformersDetector:
    def __init__(self, detector_model: str = "facebook/mask2former-swin-small-coco-instance",
                 clip_model: str = "openai/clip-vit-large-patch14", device: str | None = None, min_score: float = 0.05):
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        self.device = _device(device)
        self.processor = AutoImageProcessor.from_pretrained(detector_model)
        self.model = AutoModelForUniversalSegmentation.from_pretrained(detector_model).eval().to(self.device)
        self.labels = {int(k): GENEVAL_NAMES.get(v, v) for k, v in self.model.config.id2label.items()}
        self.min_score = min_score
        self.colour = ClipColourClassifier(clip_model, self.device)

    @torch.no_grad()
    def detect(self, images: list[Image.Image]) -> list[dict]:
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        results = self.processor.post_process_instance_segmentation(
            outputs, threshold=self.min_score, target_sizes=[im.size[::-1] for im in images], return_binary_maps=True
        )
        detections = []
        for result in results:
            found: dict[str, list[Detection]] = {}
            masks = result["segmentation"]
            for index, segment in enumerate(result["segments_info"]):
                mask = masks[index].bool().cpu().numpy() if masks is not None and masks.ndim == 3 else None
                if mask is None or not mask.any():
                    continue
                ys, xs = np.nonzero(mask)
                box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
                found.setdefault(self.labels[segment["label_id"]], []).append(Detection(box, float(segment["score"]), mask))
            detections.append(found)
        return detections

    def colours(self, image, objects, classname):
        return self.colour(image, objects, classname)


class MMDetDetector:
    """GenEval's official detector (mmdetection 2.x); install it as GenEval documents."""

    def __init__(self, config: str = "", checkpoint: str = "", clip_model: str = "openai/clip-vit-large-patch14",
                 device: str | None = None, class_names: Sequence[str] | None = None):
        try:
            from mmdet.apis import inference_detector, init_detector
        except ImportError:
            raise ImportError("the mmdet backend needs mmdetection 2.x and mmcv-full (see GenEval's install notes)") from None
        if not config or not checkpoint:
            raise ValueError("the mmdet backend needs 'config' and 'checkpoint' paths (GenEval's Mask2Former)")
        from flow_grpo.geneval.metadata import COCO_CLASSES

        self.device = _device(device)
        self.model = init_detector(config, checkpoint, device=self.device)
        self.inference = inference_detector
        self.class_names = list(class_names or COCO_CLASSES)
        self.colour = ClipColourClassifier(clip_model, self.device)

    def detect(self, images):
        results = self.inference(self.model, [np.asarray(image) for image in images])
        detections = []
        for result in results:
            boxes = result[0] if isinstance(result, tuple) else result
            masks = result[1] if isinstance(result, tuple) and len(result) > 1 else None
            found = {}
            for index, name in enumerate(self.class_names):
                for k, row in enumerate(boxes[index]):
                    mask = None if masks is None else np.asarray(masks[index][k])
                    found.setdefault(name, []).append(Detection(row[:4].tolist(), float(row[4]), mask))
            detections.append(found)
        return detections

    def colours(self, image, objects, classname):
        return self.colour(image, objects, classname)


def build_detector(backend: str, **options):
    if backend == "transformers":
        return TransformersDetector(**options)
    if backend == "mmdet":
        return MMDetDetector(**options)
    if backend == "shapes":
        from flow_grpo.shapes.detector import ShapesDetector

        return ShapesDetector(**options)
    raise ValueError(f"unknown GenEval detector backend {backend!r}; valid: {', '.join(BACKENDS)}")
