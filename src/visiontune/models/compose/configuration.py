"""The configuration of a composed VLM: a vision encoder's config, a causal LM's config, and the projector."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

PROJECTORS = ("swiglu", "mlp", "linear")


def _sub_config(value):
    if value is None or isinstance(value, PretrainedConfig):
        return value
    from transformers import CONFIG_MAPPING

    value = dict(value)
    return CONFIG_MAPPING[value.pop("model_type")](**value)


def slot_text_length(grid: int, labels: list[list[int]] | None) -> int:
    """Tokens of a slot's text: the longest label, `[`, 4 coordinates of up to len(str(grid)) digits, 3 commas, `]`."""
    return (max(len(ids) for ids in labels) if labels else 0) + 5 + 4 * len(str(grid))


class ComposedVLMConfig(PretrainedConfig):
    """`vision_config` (any vision model with patch features), `text_config` (any causal LM), and how image
    features reach the LM: `pixel_shuffle` folds s x s neighbouring patches into one token (s^2 fewer
    tokens, s^2 wider), then the `projector` maps them to the LM's width. `image_size` is the square side the
    processor resizes every image to; with the patch size it fixes `image_seq_len`, the image tokens per image.

    `summary_token`: one more image token, projected from the encoder's [CLS, mean patch] features (the global
    summary a linear probe reads; pixel shuffle alone drops the CLS token). `output_norm`: image tokens leave the
    projector RMS-normalised with a per-dimension gain started at the LM's text-embedding scale, so they neither
    vanish in nor swamp the residual stream (unnormalised, they grew 60-1,000x larger than text tokens).
    `grid_positions`: each patch token gets a learned row embedding plus a column embedding added, so the LM
    reads where in the image a token lies (under 1D RoPE a flat run of image tokens hides its 2D layout).
    `region_slots` (0: none): after the image, that many slots, each what the cells found written as a line of a
    detection answer (`Sneaker: [12,40,18,61]` on the 0..`region_grid` grid; see regions.py), with the token ids
    they write in (`region_text_ids`, `region_labels`); `region_looks`: each slot's label and region token read
    the image cropped around its box (a second encoder pass per slot). Detection fine-tuning sets them."""

    model_type = "visiontune_vlm"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}  # noqa: RUF012 (transformers reads it as is)

    def __init__(self, vision_config=None, text_config=None, projector: str = "swiglu", projector_hidden: int | None = None,
                 pixel_shuffle: int = 2, image_size: int = 224, image_token_id: int | None = None,
                 summary_token: bool = False, output_norm: bool = False, grid_positions: bool = False,
                 region_slots: int = 0, region_grid: int = 100, region_text_ids: list[int] | None = None,
                 region_labels: list[list[int]] | None = None, region_looks: bool = False, **kwargs):
        self.vision_config = _sub_config(vision_config)
        self.text_config = _sub_config(text_config)
        if projector not in PROJECTORS:
            raise ValueError(f"unknown projector {projector!r}; choose one of {', '.join(PROJECTORS)}")
        self.projector = projector
        self.projector_hidden = projector_hidden
        self.pixel_shuffle = pixel_shuffle
        self.image_size = image_size
        self.image_token_id = image_token_id
        self.summary_token = bool(summary_token)
        self.output_norm = bool(output_norm)
        self.grid_positions = bool(grid_positions)
        self.region_slots, self.region_grid = int(region_slots), int(region_grid)
        self.region_text_ids = list(region_text_ids) if region_text_ids else None
        self.region_labels = [list(ids) for ids in region_labels] if region_labels else None
        self.region_looks = bool(region_looks)
        if self.text_config is not None:
            kwargs.setdefault("tie_word_embeddings", getattr(self.text_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)

    @property
    def patch_size(self) -> int:
        return int(self.vision_config.patch_size)

    @property
    def token_grid_side(self) -> int:
        """Patch tokens per row (and per column) of an image, after pixel shuffle."""
        return self.image_size // self.patch_size // self.pixel_shuffle

    @property
    def image_seq_len(self) -> int:
        """Image tokens per image: the summary token, the patch tokens, then the region slots (regions.py)."""
        slot = 1 + slot_text_length(self.region_grid, self.region_labels) if self.region_slots else 0
        return self.token_grid_side ** 2 + int(self.summary_token) + self.region_slots * slot

    def check(self) -> None:
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % self.pixel_shuffle:
            raise ValueError(f"--image-size {self.image_size} must be a multiple of patch size {self.patch_size} "
                             f"x pixel shuffle {self.pixel_shuffle} (e.g. "
                             f"{self.patch_size * self.pixel_shuffle * max(1, round(side / self.pixel_shuffle))})")
