"""What a request's image may be, and how it becomes pixels: base64 / data URLs / uploads decoded under a byte and a
pixel limit, and (only when the server allows it) http(s) URLs fetched with guards against reaching the server's
own network.

Every problem raises `RequestError(status, message)`; the app turns it into a 4xx JSON error.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlparse

from PIL import Image, ImageOps

from .. import serve_defaults as defaults


class RequestError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass(frozen=True)
class IntakeLimits:
    max_image_bytes: int = int(defaults.MAX_BODY_MB * 2**20)
    max_pixels: int = defaults.MAX_PIXELS
    allow_urls: bool = False
    allow_private_urls: bool = False
    url_timeout_s: float = 10.0
    max_redirects: int = 3


def decode_image(data: bytes, limits: IntakeLimits, name: str = "image") -> Image.Image:
    if len(data) > limits.max_image_bytes:
        raise RequestError(413, f"{name}: {len(data)} bytes is over the {limits.max_image_bytes} byte limit")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # read from the header: nothing decoded yet
            if width * height > limits.max_pixels:
                raise RequestError(413, f"{name}: {width}x{height} pixels is over the {limits.max_pixels} pixel limit")
            image.load()
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise RequestError(413, f"{name}: refused as a decompression bomb ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise RequestError(400, f"{name}: not a readable image ({error})") from error


def decode_base64(text: str, limits: IntakeLimits, name: str = "image") -> Image.Image:
    """Plain base64 or a data URL (data:image/png;base64,...)."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise RequestError(400, f"{name}: only base64 data URLs are accepted (data:image/...;base64,...)")
    if len(text) * 3 // 4 > limits.max_image_bytes:
        raise RequestError(413, f"{name}: over the {limits.max_image_bytes} byte limit")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, f"{name}: not valid base64 ({error})") from error
    return decode_image(data, limits, name)


def _public_address(host: str, allow_private: bool) -> None:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as error:
        raise RequestError(400, f"cannot resolve {host!r}") from error
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not allow_private and (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
                                  or ip.is_multicast or ip.is_unspecified):
            raise RequestError(400, f"{host} resolves to {ip}, a private, loopback or link-local address; the "
                               f"server fetches public addresses only (--allow-private-urls to change that)")


def fetch_image(url: str, limits: IntakeLimits, name: str = "image_url") -> Image.Image:
    """An http(s) image URL, each redirect hop checked like the first address; the body capped in size."""
    import httpx

    if not limits.allow_urls:
        raise RequestError(400, f"{name}: this server does not fetch URLs (start it with --allow-urls); send the "
                           f"image as a base64 data URL")
    for _ in range(limits.max_redirects + 1):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise RequestError(400, f"{name}: only http:// and https:// URLs are fetched, not {url[:60]!r}")
        _public_address(parsed.hostname, limits.allow_private_urls)
        try:
            with httpx.stream("GET", url, timeout=limits.url_timeout_s, follow_redirects=False) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise RequestError(400, f"{name}: the URL answered HTTP {response.status_code}")
                chunks, total = [], 0
                for chunk in response.iter_bytes():
                    total += len(chunk)
                    if total > limits.max_image_bytes:
                        raise RequestError(413, f"{name}: larger than the {limits.max_image_bytes} byte limit")
                    chunks.append(chunk)
            return decode_image(b"".join(chunks), limits, name)
        except httpx.HTTPError as error:
            raise RequestError(400, f"{name}: cannot fetch ({type(error).__name__})") from error
    raise RequestError(400, f"{name}: more than {limits.max_redirects} redirects")


def image_from_reference(reference: str, limits: IntakeLimits, name: str = "image") -> Image.Image:
    """A data URL / base64 string, or an http(s) URL when allowed. Never a server path (file:// included)."""
    if not isinstance(reference, str) or not reference:
        raise RequestError(400, f"{name}: expected a base64 string, a data URL or an http(s) URL")
    scheme = urlparse(reference).scheme.lower() if "://" in reference[:12] else ""
    if scheme in ("http", "https"):
        return fetch_image(reference, limits, name)
    if scheme:
        raise RequestError(400, f"{name}: {scheme}:// URLs are not accepted; send a data URL or base64")
    return decode_base64(reference, limits, name)
