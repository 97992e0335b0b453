"""The detector's decoded exemplars: every shape, colour, size and sub-pixel offset drawn alone, sent through a
VAE (encode, take the mode, decode) and cut to its object mask as the detector cuts one, stored as descriptors.

    python -m flow_grpo.shapes.exemplars --vae models/shapes-sd3/vae     # writes flow_grpo/shapes/decoded_exemplars.npz

They let the detector recognise a shape the way the world's VAE draws it (scripts/pretrain_shapes.py rewrites
them after training a VAE). Deterministic; about 20 s on 2 CPU cores for the shipped VAE.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from flow_grpo.shapes.detector import DECODED_EXEMPLARS, descriptor, object_masks
from flow_grpo.shapes.render import PALETTE, SHAPES, SIZE_RANGE, render

OFFSETS = (0.0, 0.25, 0.5, 0.75)
CENTRES = ((16, 16), (9, 9), (23, 20))


@torch.no_grad()
def decode_through(vae, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 images [n, H, W, 3] encoded (posterior mode) and decoded by ``vae``, as uint8."""
    x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1
    decoded = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mode()).sample for chunk in x.split(batch)])
    return ((decoded.clamp(-1, 1).permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)


def decoded_exemplars(vae, background_threshold: float = 40.0, min_area: int = 12) -> dict[str, np.ndarray]:
    """``{shape: descriptors [n, 8, 8], f"{shape}_aspect": [n]}`` of every single-object scene decoded by ``vae``."""
    jobs, images = [], []
    for shape in SHAPES:
        for colour in PALETTE:
            for size in range(SIZE_RANGE[0], SIZE_RANGE[1] + 1):
                for offset in OFFSETS:
                    for cx, cy in CENTRES:
                        images.append(np.asarray(render([(shape, colour, cx + offset, cy + offset, size)])))
                        jobs.append(shape)
    stored = {shape: [] for shape in SHAPES}
    aspects = {shape: [] for shape in SHAPES}
    for shape, image in zip(jobs, decode_through(vae, np.stack(images))):
        masks, _, _ = object_masks(image.astype(np.float32), background_threshold, min_area)
        if not masks:
            continue
        mask = max(masks, key=lambda m: int(m.sum()))
        rows, cols = np.nonzero(mask)
        box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        stored[shape].append(descriptor(mask, box))
        aspects[shape].append((box[2] - box[0]) / (box[3] - box[1]))
    out = {shape: np.stack(stored[shape]).astype(np.float16) for shape in SHAPES}
    out.update({f"{shape}_aspect": np.asarray(aspects[shape], dtype=np.float32) for shape in SHAPES})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", required=True, help="a diffusers AutoencoderKL folder, e.g. models/shapes-sd3/vae")
    parser.add_argument("--out", default=DECODED_EXEMPLARS)
    args = parser.parse_args(argv)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    exemplars = decoded_exemplars(vae)
    np.savez_compressed(args.out, **exemplars)
    print(f"{sum(len(exemplars[s]) for s in SHAPES)} decoded exemplars written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
