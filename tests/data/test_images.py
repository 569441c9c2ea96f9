import numpy as np
import pytest
from PIL import Image

from visiontune.data import images as images_module
from visiontune.data.images import ImageLoadError, load_image


def test_modes_become_rgb(tmp_path):
    palette = Image.new("P", (8, 8))
    palette.putpalette([255, 0, 0] * 256)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 0))  # fully transparent: composited on white
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    gray16 = Image.fromarray(np.array([[0, 65535]] * 2, dtype=np.uint16))
    for image in (palette, rgba, cmyk, gray16, Image.new("L", (8, 8), 128)):
        assert load_image(image).mode == "RGB"
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(palette).getpixel((0, 0)) == (255, 0, 0)
    assert load_image(gray16).getpixel((1, 0)) == (255, 255, 255)  # 16-bit range rescaled, not clipped


def test_exif_orientation_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 255, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (10, 20)


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="missing.png.*--skip-bad-images"):
        load_image(tmp_path / "missing.png")
    corrupt = tmp_path / "broken.jpg"
    Image.new("RGB", (64, 64)).save(corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(ImageLoadError, match="broken.jpg: cannot decode"):
        load_image(corrupt)


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path)


def test_urls_only_http_and_unreachable_is_clear():
    with pytest.raises(ImageLoadError, match="only http:// and https://"):
        load_image("ftp://example.com/x.png")
    # Nothing listens on port 9 of loopback: a refused connection, reported with the URL.
    with pytest.raises(ImageLoadError, match=r"http://127.0.0.1:9/x.jpg: cannot fetch"):
        load_image("http://127.0.0.1:9/x.jpg")


def test_url_served_locally(tmp_path):
    import http.server
    import threading
    from functools import partial

    Image.new("RGB", (12, 7), (1, 2, 3)).save(tmp_path / "served.png")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        image = load_image(f"http://127.0.0.1:{server.server_port}/served.png")
        assert image.size == (12, 7) and image.getpixel((0, 0)) == (1, 2, 3)
    finally:
        server.shutdown()
