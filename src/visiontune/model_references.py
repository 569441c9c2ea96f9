"""A `--model` reference resolved in one place: a local folder, or a Hub id that is cached or reachable.

A typo in a path, or a Hub id with no network, is one line naming the reference and what was tried (the
closest local folder when there is one) within seconds, instead of a hub-id traceback or minutes of retries.
"""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

NETWORK_TIMEOUT_S = 3.0


def _looks_local(reference: str) -> bool:
    """A path rather than a Hub id (`namespace/name` or `name`)."""
    first = reference.split("/", 1)[0]
    return (reference.startswith((".", "/", "~")) or "\\" in reference or reference.count("/") > 1
            or (reference.count("/") == 1 and Path(first).is_dir()))


def _closest_folder(path: Path) -> str | None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return None
    folders = [entry.name for entry in parent.iterdir() if entry.is_dir()]
    close = difflib.get_close_matches(path.name, folders, 1, cutoff=0.6)
    return str(parent / close[0]) if close else None


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def _in_hub_cache(reference: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(reference, "config.json"), str)


def check_model_reference(reference: str, flag: str = "--model") -> str:
    """`reference` as transformers should load it; raises (one line) when it names nothing loadable."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_file() and path.suffix == ".gguf":
        return str(path)  # a GGUF export's language model (its mmproj file beside it)
    if path.is_file():
        raise ValueError(f"{flag} {reference}: is a file; give the model's folder (the one with config.json), or a "
                         f"GGUF export's .gguf file")
    if _looks_local(reference):
        near = _closest_folder(path)
        raise FileNotFoundError(f"{flag} {reference}: no such folder" + (f"; did you mean {near}?" if near else ""))
    if _in_hub_cache(reference) or _hub_reachable():
        return reference
    near = _closest_folder(path)
    raise FileNotFoundError(f"{flag} {reference}: not a folder here, not in the local Hub cache, and the Hub is not "
                            f"reachable (offline)" + (f"; did you mean the folder {near}?" if near else ""))
