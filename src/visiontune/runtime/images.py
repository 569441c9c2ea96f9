"""Image preprocessing in numpy + Pillow, read from a saved image processor's settings, and what each image
becomes in the prompt text.

`FixedSizeImages`: composed VLMs (BiT-style resize to one size) and LLaVA (CLIP-style shortest-edge resize +
centre crop); each image is `tokens_per_image` image tokens. `Idefics3Images`: SmolVLM's tiling (longest edge
to `size`, then to whole tiles of `max_image_size`, the tiles row by row plus a global tile), each tile its
`<row_r_col_c>` tag + `image_seq_len` image tokens. Resizing is Pillow's on 8-bit images, as the
transformers processors do it; tests check both against those processors.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


class ImagePreprocessor:
    """Resize, crop, rescale, normalise: (images, 3, height, width) float32."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.resample = Image.Resampling(settings.get("resample", Image.Resampling.BICUBIC))
        self.mean = np.asarray(settings.get("image_mean", [0.0, 0.0, 0.0]), dtype=np.float32)[:, None, None]
        self.std = np.asarray(settings.get("image_std", [1.0, 1.0, 1.0]), dtype=np.float32)[:, None, None]

    def _resized(self, image: Image.Image) -> Image.Image:
        size = self.settings.get("size") or {}
        if not self.settings.get("do_resize", True):
            return image
        if "height" in size and "width" in size:
            return image.resize((size["width"], size["height"]), self.resample)
        if "shortest_edge" in size:
            edge = size["shortest_edge"]
            scale = edge / min(image.size)
            width, height = image.size
            # transformers rounds the other edge down (get_resize_output_image_size)
            target = (edge, int(height * scale)) if width <= height else (int(width * scale), edge)
            return image.resize(target, self.resample)
        raise ValueError(f"unsupported image processor size {size}; export a fixed-size family")

    def _cropped(self, image: Image.Image) -> Image.Image:
        crop = self.settings.get("crop_size") or {}
        if not self.settings.get("do_center_crop") or not crop:
            return image
        width, height = image.size
        left, top = (width - crop["width"]) // 2, (height - crop["height"]) // 2
        return image.crop((left, top, left + crop["width"], top + crop["height"]))

    def __call__(self, images: list) -> np.ndarray:
        """(images, 3, height, width) float32."""
        rows = []
        for image in images:
            image = self._cropped(self._resized(image.convert("RGB")))
            pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
            if self.settings.get("do_rescale", True):
                pixels = pixels * np.float32(self.settings.get("rescale_factor", 1 / 255))
            if self.settings.get("do_normalize", True):
                pixels = (pixels - self.mean) / self.std
            rows.append(pixels.astype(np.float32))
        return np.stack(rows)


class FixedSizeImages:
    def __init__(self, info: dict):
        self.preprocess = ImagePreprocessor(info["image_processor"])
        self.placeholder = info["image_token"] * info["tokens_per_image"]

    def __call__(self, images: list) -> tuple[dict, list[str]]:
        """(the vision encoder's inputs, each image's text in the prompt)."""
        return {"pixel_values": self.preprocess(images)}, [self.placeholder] * len(images)


def _longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """transformers' Idefics3 rule: the longest edge to `longest`, the other by the aspect ratio, made even."""
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        height, width = longest, int(longest * aspect)
        width += width % 2
    return max(height, 1), max(width, 1)


def _whole_tiles_size(height: int, width: int, tile: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return height, width


class Idefics3Images:
    def __init__(self, info: dict):
        settings = info["image_processor"]
        self.settings, self.tokens = settings, info["tile_tokens"]
        self.resample = Image.Resampling(settings.get("resample", Image.Resampling.LANCZOS))
        self.longest = (settings.get("size") or {}).get("longest_edge")
        self.tile = settings["max_image_size"]["longest_edge"]
        self.normalise = ImagePreprocessor({**settings, "do_resize": False, "do_center_crop": False})

    def _tiles(self, image: Image.Image) -> tuple[list[Image.Image], int, int]:
        image = image.convert("RGB")
        if self.settings.get("do_resize", True) and self.longest:
            height, width = _longest_edge_size(image.height, image.width, self.longest)
            image = image.resize((width, height), self.resample)
        if not self.settings.get("do_image_splitting", True):
            return [image.resize((self.tile, self.tile), self.resample)], 0, 0
        height, width = _whole_tiles_size(image.height, image.width, self.tile)
        image = image.resize((width, height), self.resample)
        if height <= self.tile and width <= self.tile:
            return [image], 0, 0
        rows, cols = height // self.tile, width // self.tile
        tiles = [image.crop((c * self.tile, r * self.tile, (c + 1) * self.tile, (r + 1) * self.tile))
                 for r in range(rows) for c in range(cols)]
        return tiles + [image.resize((self.tile, self.tile), self.resample)], rows, cols

    def _text(self, rows: int, cols: int) -> str:
        fake, tokens = self.tokens["fake_image_token"], self.tokens["image_token"] * self.tokens["image_seq_len"]
        whole = f"{fake}{self.tokens['global_image_tag']}{tokens}{fake}"
        if rows == 0 and cols == 0:
            return whole
        grid = "".join("".join(f"{fake}<row_{r + 1}_col_{c + 1}>{tokens}" for c in range(cols)) + "\n"
                       for r in range(rows))
        return grid + "\n" + whole

    def __call__(self, images: list) -> tuple[dict, list[str]]:
        per_image, texts = [], []
        for image in images:
            tiles, rows, cols = self._tiles(image)
            per_image.append(self.normalise(tiles))
            texts.append(self._text(rows, cols))
        most = max(len(t) for t in per_image)
        pixels = np.zeros((len(images), most, 3, self.tile, self.tile), dtype=np.float32)
        mask = np.zeros((len(images), most, self.tile, self.tile), dtype=bool)
        for row, tiles in enumerate(per_image):
            pixels[row, : len(tiles)], mask[row, : len(tiles)] = tiles, True
        return {"pixel_values": pixels, "pixel_attention_mask": mask}, texts


PREPARATIONS = {"tiles": Idefics3Images, "fixed": FixedSizeImages}


def image_preparation(info: dict):
    """The image preparation an export's `export.json` names (its family's `runtime_images`)."""
    return PREPARATIONS[info["image_preparation"]](info)
