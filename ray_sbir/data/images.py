"""Decoding items to fixed-size uint8 arrays, augmentation, and conversion to model input.

Sketches are single-channel ``[H, W]`` (white paper 255, dark ink), photos ``[H, W, 3]`` RGB. Arrays stay
uint8 until they reach the training worker / encoder actor, which normalises on its own device: that keeps
Ray object-store traffic four times smaller than float32.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image

# ImageNet statistics: the pretrained backbones expect them.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

# Guard against decompression bombs: a 50-MPixel image is far beyond any dataset photo.
MAX_IMAGE_PIXELS = 50_000_000


class BadItem(ValueError):
    """An item that cannot be decoded (corrupt/empty image, empty sketch); ``str`` says what and where."""


class BadItemsError(ValueError):
    """Strict mode: items that could not be read or decoded stop the job instead of being skipped."""


def _open_image(data: bytes, where: str) -> Image.Image:
    if not data:
        raise BadItem(f"{where}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise BadItem(f"{where}: image of {img.width}x{img.height} pixels exceeds {MAX_IMAGE_PIXELS}")
            img.load()
    except BadItem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadItem(f"{where}: image too large ({e})") from e
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... on bad bytes
        raise BadItem(f"{where}: not a decodable image ({type(e).__name__}: {e})") from e
    return img


def _fit_square(img: Image.Image, size: int, fill) -> Image.Image:
    """Resize keeping the aspect ratio and pad to a square: no part of the object is cropped away."""
    img = img.copy()
    img.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    if img.size == (size, size):
        return img
    canvas = Image.new(img.mode, (size, size), fill)
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def _scale_to(img: Image.Image, size: int, fill) -> Image.Image:
    if img.width < size or img.height < size:  # upscale small inputs before padding
        scale = size / max(img.width, img.height)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    return _fit_square(img, size, fill)


def _on_white(img: Image.Image) -> Image.Image:
    """Composite transparency onto white paper rather than the black a plain convert() would give."""
    if img.mode not in ("RGBA", "LA", "P"):
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def decode_photo(data: bytes, size: int, where: str = "<bytes>") -> np.ndarray:
    img = _on_white(_open_image(data, where))
    return np.asarray(_scale_to(img.convert("RGB"), size, (255, 255, 255)), dtype=np.uint8)


def decode_sketch_image(data: bytes, size: int, where: str = "<bytes>") -> np.ndarray:
    img = _on_white(_open_image(data, where))
    arr = np.asarray(_scale_to(img.convert("L"), size, 255), dtype=np.uint8)
    if arr.min() > 250:
        raise BadItem(f"{where}: empty sketch (no ink)")
    return arr


def random_affine(images: np.ndarray, rng: np.random.Generator, *, scale=(0.85, 1.1), shift=0.08, flip=True,
                  fill: float = 255.0) -> np.ndarray:
    """Random scale / shift / horizontal flip for a uint8 batch ``[B, H, W]`` or ``[B, H, W, C]``.

    Vectorised with ``affine_grid``/``grid_sample`` over the whole batch; the border is filled with paper
    white so sketches gain no dark frame."""
    if len(images) == 0:
        return images
    gray = images.ndim == 3
    x = torch.from_numpy(images[..., None] if gray else images).permute(0, 3, 1, 2).float()
    b = x.shape[0]
    s = torch.from_numpy(rng.uniform(scale[0], scale[1], size=b)).float()
    sx = s * torch.from_numpy(np.where(flip & (rng.random(b) < 0.5), -1.0, 1.0)).float()
    t = torch.from_numpy(rng.uniform(-shift, shift, size=(b, 2)) * 2).float()
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = 1 / sx, 1 / s
    theta[:, :, 2] = t
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    # Sample (x - fill) so zero padding outside the image reads as `fill`.
    out = torch.nn.functional.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = (out + fill).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[..., 0] if gray else out


def color_jitter(images: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Per-image brightness/contrast jitter for a uint8 RGB batch."""
    if len(images) == 0:
        return images
    x = images.astype(np.float32)
    b = len(x)
    brightness = rng.uniform(1 - strength, 1 + strength, size=(b, 1, 1, 1)).astype(np.float32)
    contrast = rng.uniform(1 - strength, 1 + strength, size=(b, 1, 1, 1)).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean * brightness
    return np.clip(x, 0, 255).round().astype(np.uint8)


def to_model_input(images: torch.Tensor | np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 ``[B, H, W]`` (sketch) or ``[B, H, W, 3]`` (photo) -> normalised float ``[B, 3, H, W]``,
    channels_last in memory."""
    x = torch.as_tensor(images)
    if device is not None:
        x = x.to(device, non_blocking=True)
    if x.ndim == 3:
        x = x.unsqueeze(-1).expand(*x.shape, 3)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    # channels_last whatever the array's layout (grayscale sketches came out NCHW): convolutions run about 2x
    # faster on CPU in this format (bench/bench_train_loop.py --channels-last), and it is what GPUs prefer.
    return ((x - MEAN.to(x.device)) / STD.to(x.device)).contiguous(memory_format=torch.channels_last)
