"""One safe image loader for paths, URLs and in-dataset images.

Every image that enters visiontune goes through `load_image`: EXIF orientation applied, every mode
(palette, RGBA, CMYK, 16-bit, grayscale...) converted to 8-bit RGB, decompression bombs refused,
URLs fetched with a timeout, a size cap and http/https only. Failures raise `ImageLoadError`, whose
message names the image and the way out.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image, ImageOps

from .zip_images import is_zip, zip_images

# Refuse images over ~179 MP (PIL's own default warns at 89 MP and errors at twice that).
MAX_IMAGE_PIXELS = 178_956_970
URL_TIMEOUT_S = 20.0
URL_MAX_BYTES = 50 * 1024 * 1024

SKIP_HINT = "pass --skip-bad-images to count and skip such images"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageLoadError(ValueError):
    """An image could not be loaded; the message names it and says what to do."""

    def without_skip_hint(self) -> str:
        """The message as reported while --skip-bad-images is already on."""
        return str(self).replace(f", or {SKIP_HINT}", "").replace(f"; {SKIP_HINT}", "")


def is_url(reference: str) -> bool:
    return isinstance(reference, str) and reference.split("://", 1)[0].lower() in ("http", "https", "ftp", "file")


def describe_image(reference: Any) -> str:
    """A short name for an image reference, for messages."""
    if isinstance(reference, (str, Path)):
        return str(reference)
    if isinstance(reference, dict) and reference.get("path"):
        return str(reference["path"])
    return f"<in-memory {type(reference).__name__}>"


def _fetch_url(url: str) -> bytes:
    import requests

    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageLoadError(f"{url}: only http:// and https:// URLs are fetched, not {scheme}://")
    try:
        with requests.get(url, timeout=URL_TIMEOUT_S, stream=True) as response:
            response.raise_for_status()
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > URL_MAX_BYTES:
                raise ImageLoadError(f"{url}: {declared} bytes is over the {URL_MAX_BYTES} byte cap for URL images")
            chunks, total = [], 0
            for chunk in response.iter_content(1 << 16):
                total += len(chunk)
                if total > URL_MAX_BYTES:
                    raise ImageLoadError(f"{url}: larger than the {URL_MAX_BYTES} byte cap for URL images")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.RequestException as error:
        raise ImageLoadError(f"{url}: cannot fetch ({type(error).__name__}: {error}); check the address and "
                             f"the network, or {SKIP_HINT}") from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparent pixels are composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit single channel: rescale the real range into 0..255 instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        image = background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _open(data: bytes | str | Path, name: str) -> Image.Image:
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(source) as image:
            image.load()
            return _to_rgb(image)
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{name}: refused as a decompression bomb ({error}); resize it, or {SKIP_HINT}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{name}: cannot decode ({error}); re-export the file, or {SKIP_HINT}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def _open_zip_member(archive: Path, name: str) -> Image.Image:
    try:
        data = zip_images(archive).read(name)
    except KeyError:
        raise ImageLoadError(f"{archive}: no member {name!r}; check the name, or {SKIP_HINT}") from None
    except (OSError, zipfile.BadZipFile) as error:
        raise ImageLoadError(f"{archive}: {name!r} could not be read ({error}); {SKIP_HINT}") from None
    return _open(data, f"{archive}:{name}")


def load_image(reference: Any, base_dir: str | Path | None = None) -> Image.Image:
    """Load an image from a path, URL, bytes, PIL image, numpy array or datasets image dict as RGB."""
    if isinstance(reference, Image.Image):
        if reference.width * reference.height > MAX_IMAGE_PIXELS:
            raise ImageLoadError(f"{describe_image(reference)}: {reference.size} is over {MAX_IMAGE_PIXELS} pixels")
        return _to_rgb(reference)
    if isinstance(reference, np.ndarray):
        return _to_rgb(Image.fromarray(reference))
    if isinstance(reference, (bytes, bytearray)):
        return _open(bytes(reference), "<bytes>")
    if isinstance(reference, dict):  # datasets' Image feature without decoding: {"bytes": ..., "path": ...}
        if reference.get("bytes"):
            return _open(reference["bytes"], describe_image(reference))
        if reference.get("path"):
            return load_image(reference["path"], base_dir)
        raise ImageLoadError(f"image entry {reference!r} has neither bytes nor path")
    if isinstance(reference, (str, Path)):
        text = str(reference)
        if is_url(text):
            return _open(_fetch_url(text), text)
        path = Path(text)
        if not path.is_absolute() and is_zip(base_dir):
            return _open_zip_member(Path(base_dir), text)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise ImageLoadError(f"{path}: no such image file; check the path (relative paths are resolved against "
                                 f"the dataset's folder or --images-dir), or {SKIP_HINT}")
        return _open(path, str(path))
    raise ImageLoadError(f"cannot load an image from a {type(reference).__name__}; give a path, URL or PIL image")


def image_size(reference: Any, base_dir: str | Path | None = None, where: str = "") -> tuple[int, int]:
    """(width, height) as `load_image` would return it (EXIF rotation applied), from a local file's header
    alone when possible; any other reference is loaded."""
    if isinstance(reference, (str, Path)) and not is_url(str(reference)):
        path = Path(reference)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        try:
            with Image.open(path) as image:
                width, height = image.size
                rotated = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
                return (height, width) if rotated else (width, height)
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageLoadError(f"{where or path}: cannot read the image size of {path} ({error}); the size is "
                                 f"needed to place its boxes. Fix the file or give width/height in the data") from error
    return load_image(reference, base_dir).size


def expand_image_inputs(inputs: list[Any]) -> list[Any]:
    """Folders become their image files (sorted, recursive); files, URLs and PIL images pass through."""
    expanded: list[Any] = []
    for item in inputs:
        if isinstance(item, (str, Path)) and not is_url(str(item)) and Path(item).is_dir():
            files = sorted(p for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ImageLoadError(f"{item}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            expanded.extend(str(p) for p in files)
        else:
            expanded.append(item)
    return expanded


# ImageNet's per-channel statistics: what DINOv2-style encoders were trained with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
