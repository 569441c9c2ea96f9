"""`visiontune serve`: an HTTP API (OpenAI-compatible chat completions + the task's own endpoint) and a web page
for any trained model, with dynamic batching, hardened defaults and Prometheus metrics (see `app.py`)."""

from __future__ import annotations

import ipaddress

from .. import serve_defaults as defaults
from .app import ServeOptions, create_app
from .intake import IntakeLimits
from .served_model import ServedModel


def serve(model: str, host: str = defaults.HOST, port: int = defaults.PORT, max_batch: int = defaults.MAX_BATCH,
          max_wait_ms: float = defaults.MAX_WAIT_MS, api_key: str | None = None, allow_urls: bool = False,
          allow_private_urls: bool = False, max_body_mb: float = defaults.MAX_BODY_MB,
          max_pixels: int = defaults.MAX_PIXELS, device: str = "auto", adapters: dict[str, str] | None = None,
          log=print) -> None:
    import uvicorn

    if not _loopback(host) and not api_key:
        log(f"warning: serving on {host} without --api-key: anyone who can reach this address can use the model")
    served = ServedModel(model, batch_size=max_batch, device=device, log=log, adapters=adapters)
    limits = IntakeLimits(max_image_bytes=int(max_body_mb * 2**20), max_pixels=max_pixels, allow_urls=allow_urls,
                          allow_private_urls=allow_private_urls)
    options = ServeOptions(max_batch=max_batch, max_wait_ms=max_wait_ms, api_key=api_key,
                           max_body_bytes=int(max_body_mb * 2**20), limits=limits)
    log(f"serving {', '.join(served.names)} ({served.task}, {served.mode}) on http://{host}:{port}/  "
        f"(API: /v1/chat/completions, /v1/predict; /health, /metrics)")
    uvicorn.run(create_app(served, options), host=host, port=port, log_level="warning")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["IntakeLimits", "ServeOptions", "ServedModel", "create_app", "serve"]
