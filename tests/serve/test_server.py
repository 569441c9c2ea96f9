"""`visiontune serve` as a user runs it: a real server in a subprocess on loopback, real clients (the openai package,
httpx, headless Chromium), every answer compared with `predict` on the same images."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from served import Server, data_url

QUIET = dict(log=lambda *_: None)
KEY = "test-key-123"
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # kept after the run (gitignored)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _openai_messages(task, image_path) -> list[dict]:
    """The task's own chat messages, with the image part as an OpenAI image_url part."""
    converted = []
    for message in task.messages():
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": data_url(image_path)}} if part["type"] == "image"
                       else part for part in content]
        converted.append({"role": message["role"], "content": content})
    return converted


@pytest.fixture(scope="module")
def caption_server(trained_run):
    server = Server(trained_run, "--max-batch", "8", "--max-wait-ms", "20")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded_server(trained_run):
    server = Server(trained_run, "--api-key", KEY, "--max-body-mb", "1", "--max-pixels", "1000000", "--allow-urls")
    yield server
    server.stop()


def test_openai_client_chat_completions_equal_predict(caption_server, trained_run, shapes):
    from openai import OpenAI

    from visiontune.api.predict import predict
    from visiontune.models.run_base import read_run_metadata
    from visiontune.tasks import task_from_metadata

    task = task_from_metadata(read_run_metadata(trained_run))
    files = sorted(Path(shapes["images"]).glob("*.png"))[:3]
    expected = predict(model=str(trained_run), images=[str(f) for f in files], **QUIET)
    client = OpenAI(base_url=f"{caption_server.url}/v1", api_key="unused")
    for file, row in zip(files, expected):
        reply = client.chat.completions.create(model="visiontune", messages=_openai_messages(task, file),
                                               max_tokens=task.max_new_tokens)
        assert reply.choices[0].message.content == row["prediction"]
        assert reply.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="visiontune", messages=_openai_messages(task, files[0]),
                                            max_tokens=task.max_new_tokens, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected[0]["prediction"]
    assert chunks[-1].choices[0].finish_reason == "stop"


def _batch_histogram(url: str) -> tuple[float, float]:
    """(batches run, requests in them) from the server's metrics."""
    text = httpx.get(f"{url}/metrics").text
    value = lambda name: float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))
    return value("visiontune_batch_size_count"), value("visiontune_batch_size_sum")


def test_chat_streams_as_it_generates_samples_by_seed_and_honours_stop_and_max_tokens(caption_server, trained_run,
                                                                                       shapes):
    from openai import OpenAI

    from visiontune.models.run_base import read_run_metadata
    from visiontune.tasks import task_from_metadata

    task = task_from_metadata(read_run_metadata(trained_run))
    messages = _openai_messages(task, min(Path(shapes["images"]).glob("*.png")))
    client = OpenAI(base_url=f"{caption_server.url}/v1", api_key="unused")
    ask = lambda **settings: client.chat.completions.create(model="visiontune", messages=messages, **settings)
    greedy = ask(max_tokens=24).choices[0].message.content
    pieces = [c.choices[0].delta.content for c in ask(max_tokens=24, stream=True) if c.choices[0].delta.content]
    assert len(pieces) > 2 and "".join(pieces) == greedy  # token by token, not the reply in one piece
    draws = [ask(max_tokens=12, temperature=1.5, seed=seed).choices[0].message.content for seed in (7, 7, 8, 9)]
    assert draws[0] == draws[1] and len(set(draws)) > 1
    second = " " + greedy.split()[1]
    cut = ask(max_tokens=24, stop=[second]).choices[0]
    assert cut.message.content == greedy[:greedy.index(second)].strip() and cut.finish_reason == "stop"
    streamed_cut = "".join(c.choices[0].delta.content or "" for c in ask(max_tokens=24, stop=[second], stream=True))
    assert streamed_cut == cut.message.content
    body = {"model": "visiontune", "messages": messages}
    batches, requests = _batch_histogram(caption_server.url)

    async def together():
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*(http.post(f"{caption_server.url}/v1/chat/completions",
                                                    json={**body, "max_tokens": n}) for n in (2, 3, 4, 5)))
    replies = [r.json() for r in asyncio.run(together())]
    assert [r["usage"]["completion_tokens"] for r in replies] == [2, 3, 4, 5]
    assert all(r["choices"][0]["finish_reason"] == "length" for r in replies)
    assert all(greedy.startswith(r["choices"][0]["message"]["content"]) for r in replies)
    after_batches, after_requests = _batch_histogram(caption_server.url)
    assert after_requests - requests == 4 and after_batches - batches < 4  # different max_tokens shared a batch


def test_one_base_serves_several_adapters_by_name(tiny_models, trained_run, shape_classes, shapes, tmp_path):
    """A caption run and a classify run over the same base, served from one copy of it: each request gets the
    answers of the adapter it names (as `predict` gives them for that run alone), `base` the base model's."""
    from visiontune.api.predict import predict
    from visiontune.api.train import train

    classify_run = tmp_path / "classify"
    train(task="classify", model=str(tiny_models["smolvlm"]), data=str(shape_classes), output=str(classify_run),
          method="lora", learning_rate=3e-3, epochs=2, batch_size=4, num_workers=0, report_to="none",
          preflight=False, keep_skills=False, **QUIET)
    image = min(Path(shapes["images"]).glob("*.png"))
    upload = {"file": (image.name, image.read_bytes(), "image/png")}
    server = Server(tiny_models["smolvlm"], "--adapter", f"caption={trained_run}", "--adapter",
                    f"classify={classify_run}")
    try:
        listed = [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
        served = {name: httpx.post(f"{server.url}/v1/predict?model={name}", files=upload, timeout=120).json()
                  for name in ("caption", "classify", "base")}
        unnamed = httpx.post(f"{server.url}/v1/predict", files=upload, timeout=120).json()
        unknown = httpx.post(f"{server.url}/v1/predict?model=detect", files=upload, timeout=120)
    finally:
        server.stop()
    runs = {"caption": trained_run, "classify": classify_run, "base": tiny_models["smolvlm"]}
    expected = {name: predict(model=str(run), images=[str(image)], **QUIET)[0] for name, run in runs.items()}
    assert listed == ["caption", "classify", "base"]
    assert served["caption"]["task"] == "caption" and served["classify"]["task"] == "classify"
    for name in ("caption", "base"):
        assert served[name]["results"][0]["prediction"] == expected[name]["prediction"], name
    row = served["classify"]["results"][0]
    assert row["label"] == expected["classify"]["label"]
    for label, probability in expected["classify"]["probabilities"].items():
        assert abs(row["probabilities"][label] - probability) < 1e-3
    assert unnamed["results"][0]["prediction"] == expected["caption"]["prediction"]  # the first adapter
    assert unknown.status_code == 404 and "caption, classify, base" in unknown.json()["error"]["message"]


def test_predict_endpoint_equals_predict_for_uploads_and_base64(caption_server, trained_run, shapes):
    from visiontune.api.predict import predict

    files = sorted(Path(shapes["images"]).glob("*.png"))[:4]
    expected = [{k: v for k, v in row.items() if k != "image"}
                for row in predict(model=str(trained_run), images=[str(f) for f in files], **QUIET)]
    uploaded = httpx.post(f"{caption_server.url}/v1/predict", timeout=60,
                          files=[("file", (f.name, f.read_bytes(), "image/png")) for f in files]).json()
    assert [{k: v for k, v in row.items() if k != "image"} for row in uploaded["results"]] == expected
    assert [row["image"] for row in uploaded["results"]] == [f.name for f in files]
    encoded = httpx.post(f"{caption_server.url}/v1/predict", timeout=60,
                         json={"images": [base64.b64encode(f.read_bytes()).decode() for f in files]}).json()
    assert [{k: v for k, v in row.items() if k != "image"} for row in encoded["results"]] == expected


def test_classify_and_detector_endpoints_equal_predict(tiny_models, shape_classes, tmp_path):
    """Score-mode classification (a base model with a classify run's metadata) and a dedicated detector."""
    from visiontune.api.predict import predict
    from visiontune.detector import Detector

    classifier = tmp_path / "classifier"
    shutil.copytree(tiny_models["smolvlm"], classifier)
    (classifier / "visiontune.json").write_text(json.dumps({"task": "classify",
                                                            "classes": ["circle", "square", "triangle"]}))
    files = sorted(Path(shape_classes).rglob("*.png"))[:4]
    expected = predict(model=str(classifier), images=[str(f) for f in files], **QUIET)
    server = Server(classifier)
    try:
        rows = httpx.post(f"{server.url}/v1/predict", timeout=60,
                          files=[("file", (f.name, f.read_bytes(), "image/png")) for f in files]).json()["results"]
    finally:
        server.stop()
    for row, reference in zip(rows, expected):
        assert row["label"] == reference["label"]
        assert row["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-4)

    _save_random_detector(tmp_path)
    images = [Image.open(f).convert("RGB") for f in files]
    reference_boxes = Detector.from_pretrained(tmp_path / "detector").predict(images)
    server = Server(tmp_path / "detector")
    try:
        rows = httpx.post(f"{server.url}/v1/predict", timeout=60,
                          files=[("file", (f.name, f.read_bytes(), "image/png")) for f in files]).json()["results"]
        chat = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(files[0])}}]}]})
    finally:
        server.stop()
    assert chat.status_code == 400 and "dedicated detector" in chat.json()["error"]["message"]
    for row, reference in zip(rows, reference_boxes):
        assert [b["label"] for b in row["boxes"]] == [b["label"] for b in reference["boxes"]]
        assert [b["score"] for b in row["boxes"]] == pytest.approx([b["score"] for b in reference["boxes"]], abs=1e-5)


def test_composed_model_and_its_onnx_export_are_served_like_predict(tmp_path, shapes):
    from visiontune.api.predict import predict
    from visiontune.export.onnx_export import export_onnx
    from visiontune.models.tiny import build_tiny_model

    composed = build_tiny_model("composed", tmp_path / "composed")
    export_onnx(str(composed), str(tmp_path / "export"), **QUIET)
    files = sorted(Path(shapes["images"]).glob("*.png"))[:3]
    for model in (composed, tmp_path / "export" / "onnx"):
        # one image at a time, as the sequential requests below run (a random model's near-ties could flip)
        expected = [predict(model=str(model), images=[str(f)], max_new_tokens=8, **QUIET)[0]["prediction"]
                    for f in files]
        server = Server(model)
        try:
            replies = [httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
                "max_tokens": 8, "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_url(f)}},
                    {"type": "text", "text": "Describe this image in one sentence."}]}]}).json()
                for f in files]
            health = httpx.get(f"{server.url}/health").json()
        finally:
            server.stop()
        assert health["task"] == "caption"
        assert [r["choices"][0]["message"]["content"] for r in replies] == expected, model


def _save_random_detector(folder: Path) -> Path:
    """An untrained dedicated detector that shows every box (score threshold 0), saved under folder/detector."""
    from transformers import Dinov2Config, Dinov2Model

    from visiontune.detector import Detector

    Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                             patch_size=8, image_size=128)).save_pretrained(folder / "vit")
    detector = Detector.create(["circle", "square", "triangle"], backbone=str(folder / "vit"),
                               image_size=(128, 128), neck_channels=32, log=lambda *_: None)
    detector.config.score_threshold = 0.0
    detector.save_pretrained(folder / "detector")
    return folder / "detector"


def _bomb() -> bytes:
    """A small PNG that decodes to 400 million pixels."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


def test_bad_requests_get_the_right_4xx_and_the_server_keeps_serving(guarded_server, shapes):
    url, auth = guarded_server.url, {"Authorization": f"Bearer {KEY}"}
    good_file = min(Path(shapes["images"]).glob("*.png"))
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(jpeg, "JPEG")

    def chat_with(image_url: str) -> httpx.Response:
        return httpx.post(f"{url}/v1/chat/completions", headers=auth, timeout=30, json={
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                                      {"type": "text", "text": "Describe."}]}]})

    cases = {
        "malformed JSON": (httpx.post(f"{url}/v1/predict", headers=auth, content=b"{not json"), 400),
        "unknown part type": (httpx.post(f"{url}/v1/chat/completions", headers=auth, json={
            "messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]}), 400),
        "not an image": (httpx.post(f"{url}/v1/predict", headers=auth,
                                    files={"file": ("notes.png", b"hello, not an image", "image/png")}), 400),
        "truncated JPEG": (httpx.post(f"{url}/v1/predict", headers=auth,
                                      files={"file": ("cut.jpg", jpeg.getvalue()[:300], "image/jpeg")}), 400),
        "decompression bomb": (httpx.post(f"{url}/v1/predict", headers=auth,
                                          files={"file": ("bomb.png", _bomb(), "image/png")}), 413),
        "oversized body": (httpx.post(f"{url}/v1/predict", headers=auth,
                                      files={"file": ("big.png", b"\0" * (2 * 2**20), "image/png")}), 413),
        "oversized chunked body (no length declared)": (httpx.post(
            f"{url}/v1/predict", headers={**auth, "content-type": "application/json"},
            content=(b"x" * 65536 for _ in range(40))), 413),
        "file:// URL": (chat_with("file:///etc/passwd"), 400),
        "URL to 127.0.0.1": (chat_with(f"{url}/health"), 400),
        "URL to 10.0.0.1": (chat_with("http://10.0.0.1/cat.png"), 400),
        "wrong API key": (httpx.post(f"{url}/v1/predict", headers={"Authorization": "Bearer nope"},
                                     files={"file": ("a.png", good_file.read_bytes(), "image/png")}), 401),
        "no API key on metrics": (httpx.get(f"{url}/metrics"), 401),
        "unknown route": (httpx.get(f"{url}/v2/nothing", headers=auth), 404),
        "wrong method": (httpx.get(f"{url}/v1/predict", headers=auth), 405),
    }
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        assert response.json()["error"]["message"], name  # a JSON error naming the problem, never a stack trace
        assert "Traceback" not in response.text, name
    good = httpx.post(f"{url}/v1/predict", headers=auth, timeout=60,
                      files={"file": ("a.png", good_file.read_bytes(), "image/png")})
    assert good.status_code == 200 and good.json()["results"][0]["prediction"]
    metrics = httpx.get(f"{url}/metrics", headers=auth).text
    assert 'visiontune_errors_total{endpoint="/v1/predict",status="413"} 3.0' in metrics
    assert "visiontune_request_seconds_bucket" in metrics and "visiontune_batch_size_count" in metrics


def test_concurrent_clients_get_no_errors_and_memory_stays_flat(caption_server, shapes):
    """32 clients at once (bounded: 1,000 requests in all); batches form; the server's memory does not grow."""
    files = [f.read_bytes() for f in sorted(Path(shapes["images"]).glob("*.png"))]

    async def client(http: httpx.AsyncClient, count: int, statuses: list) -> None:
        for index in range(count):
            response = await http.post(f"{caption_server.url}/v1/predict",
                                       files={"file": ("x.png", files[index % len(files)], "image/png")})
            statuses.append(response.status_code)

    async def load(total: int) -> list:
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=120) as http:
            await asyncio.gather(*(client(http, total // 32, statuses) for _ in range(32)))
        return statuses

    warm = asyncio.run(load(256))
    before = caption_server.rss_bytes()
    statuses = asyncio.run(load(1024))
    after = caption_server.rss_bytes()
    assert set(warm) == {200} and set(statuses) == {200}
    assert after - before < 64 * 2**20, (before, after)
    metrics = httpx.get(f"{caption_server.url}/metrics").text
    batches = [line for line in metrics.splitlines() if line.startswith("visiontune_batch_size_sum")]
    count = [line for line in metrics.splitlines() if line.startswith("visiontune_batch_size_count")]
    assert float(batches[0].split()[-1]) / float(count[0].split()[-1]) > 1.5  # requests really were batched


@pytest.mark.skipif(shutil.which("chromedriver") is None or shutil.which("chromium") is None,
                    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
def test_the_page_shows_boxes_in_headless_chromium(tmp_path, shapes):
    """Upload an image on the page: the boxes are drawn and listed; the confidence slider (starting at the run's
    threshold) filters them live; the page names the model, not its path; a screenshot is kept as an artefact."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _save_random_detector(tmp_path)
    image = min(Path(shapes["images"]).glob("*.png"))
    server = Server(tmp_path / "detector")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        expected = httpx.post(f"{server.url}/v1/predict?threshold=0", timeout=60,
                              files={"file": (image.name, image.read_bytes(), "image/png")}).json()["results"][0]["boxes"]
        health = httpx.get(f"{server.url}/health").json()
        browser.get(server.url + "/")
        browser.find_element(By.ID, "file").send_keys(str(image))
        WebDriverWait(browser, 60).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        heading = browser.find_element(By.CSS_SELECTOR, "#answer h2").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#answer tr")
        coloured = browser.execute_script(
            "const c = document.getElementById('canvas'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 0; i < d.length; i += 4) { if (d[i] === 0xe6 && d[i + 1] === 0x19 && d[i + 2] === 0x4b) n++; }"
            "return n;")
        ARTEFACTS.mkdir(exist_ok=True)
        screenshot = ARTEFACTS / "serve-page.png"
        browser.save_screenshot(str(screenshot))
        slider = browser.find_element(By.ID, "threshold")
        start, named = float(slider.get_attribute("value")), browser.find_element(By.ID, "model").text
        scores = sorted(box["score"] for box in expected)
        cut = math.ceil(scores[len(scores) // 2] * 1000) / 1000  # the slider's step is 0.001
        browser.execute_script("const s = arguments[0]; s.value = arguments[1]; s.dispatchEvent(new Event('input'));",
                               slider, str(cut))
        filtered_heading = browser.find_element(By.CSS_SELECTOR, "#answer h2").text
        filtered_rows = len(browser.find_elements(By.CSS_SELECTOR, "#answer tr"))
    finally:
        browser.quit()
        server.stop()
    assert expected and heading == f"{len(expected)} box{'es' if len(expected) != 1 else ''}"
    assert len(rows) == len(expected)
    assert coloured > 0  # the first class's colour is on the canvas: boxes were drawn
    assert screenshot.stat().st_size > 10_000
    assert start == health["threshold"] == 0.0  # this detector's own threshold
    kept = sum(score >= cut for score in scores)
    assert kept < len(expected)
    assert filtered_heading == f"{kept} box{'es' if kept != 1 else ''}" and filtered_rows == kept
    assert named.startswith("detector ·") and str(tmp_path) not in named
    print(f"screenshot: {screenshot}")
