"""CLIP models for the CLIP-based rewards, loaded from a hub id or a local folder, on a given device."""

from __future__ import annotations

import torch

from flow_grpo.images import to_pil


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _features(output) -> torch.Tensor:
    # transformers < 5 returns the projected features, >= 5 an output object holding them as pooler_output
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipEmbedder:
    """L2-normalised CLIP image and text embeddings.

    ``model``: a CLIPModel (hub id or folder). ``processor``: where the tokenizer and image processor live
    (default: the model's folder; PickScore keeps them in the LAION CLIP-H repository).
    """

    def __init__(self, model: str, processor: str | None = None, device: str | None = None, dtype: str = "float32"):
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.device = device or default_device()
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.model = CLIPModel.from_pretrained(model).eval().to(self.device, self.dtype)
        source = processor or model
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.image_processor = CLIPImageProcessor.from_pretrained(source)

    @torch.no_grad()
    def images(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.image_processor(images=to_pil(images), return_tensors="pt")["pixel_values"]
        features = _features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def texts(self, texts) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt").to(self.device)
        features = _features(self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())
