"""The frozen-vision feature cache: a frozen vision encoder's output for an image is computed once and reused,
across epochs and evaluation passes.

Each image unit in a batch (an image, or a row of tiles: dim 0 of the pixel inputs) is keyed by a hash of its
preprocessed pixels (computed by the collator, in the data-loader workers), of the vision weights, and of
whatever else the family's adapter says its outputs depend on (its `stamp`), so a changed image, image size,
preprocessing or encoder never reuses stale features. Entries live in memory up
to `memory_bytes`, then as safetensors files under `folder` (the run's `feature-cache/`, or
$VISIONTUNE_CACHE). Exact only where `models/vision_cache.vision_adapter` says so; elsewhere training runs
uncached and the log says why.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .vision_cache import IMAGE_KEYS, VisionAdapter, vision_adapter, vision_fingerprint

DEFAULT_MEMORY_BYTES = 2 * 2**30


class FeatureCache:
    def __init__(self, adapter: VisionAdapter, fingerprint: str, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 folder: str | Path | None = None):
        self.adapter, self.fingerprint = adapter, fingerprint
        self.memory_bytes, self.folder = memory_bytes, Path(folder) / fingerprint if folder else None
        self.entries: dict[str, dict[str, torch.Tensor]] = {}
        self.bytes_in_memory, self.on_disk, self.hits, self.computed = 0, set(), 0, 0

    @classmethod
    def for_model(cls, model, folder=None, memory_bytes: int = DEFAULT_MEMORY_BYTES, log=print,
                  for_generation: bool = False) -> FeatureCache | None:
        """A cache for this model, or None (logged) where caching would not be exact. `for_generation`: for
        `generate` calls (inference), where only some families take precomputed features."""
        adapter, reason = vision_adapter(model, inference=for_generation)
        if adapter is not None and for_generation and not adapter.in_generation:
            adapter, reason = None, "this family's generate() does not take precomputed vision features"
        if adapter is None:
            log(f"feature cache off: {reason}")
            return None
        # A prediction cache lives in memory with its one model: no need to hash the weights for its keys.
        fingerprint = "" if for_generation and folder is None else vision_fingerprint(model)
        return cls(adapter, fingerprint, memory_bytes, folder)

    def _store(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        entry = {name: tensor.detach().to("cpu").contiguous() for name, tensor in entry.items()}
        size = sum(t.numel() * t.element_size() for t in entry.values())
        if self.folder is None:  # memory only: the oldest entries make room
            while self.entries and self.bytes_in_memory + size > self.memory_bytes:
                old = self.entries.pop(next(iter(self.entries)))
                self.bytes_in_memory -= sum(t.numel() * t.element_size() for t in old.values())
        if self.bytes_in_memory + size <= self.memory_bytes or self.folder is None:
            self.entries[key] = entry
            self.bytes_in_memory += size
            return
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f"{key}.partial"
        save_file(entry, str(partial))
        partial.replace(self.folder / f"{key}.safetensors")  # never a half-written entry under its real name
        self.on_disk.add(key)

    def _load(self, key: str) -> dict[str, torch.Tensor] | None:
        if key in self.entries:
            return self.entries[key]
        path = self.folder / f"{key}.safetensors" if self.folder else None
        if path is not None and (key in self.on_disk or path.is_file()):
            from safetensors.torch import load_file

            self.on_disk.add(key)
            return load_file(str(path))
        return None

    @torch.no_grad()
    def apply(self, model, inputs: dict) -> dict:
        """The batch with its pixel inputs replaced by the cached vision outputs (computing what is missing)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        stamp = self.adapter.stamp(getattr(base, "module", base)) if self.adapter.stamp else ""
        keys = [key + stamp for key in inputs.pop(IMAGE_KEYS)]
        known = {key: self._load(key) for key in dict.fromkeys(keys)}
        # one forward per distinct image: per-class detection queries repeat an image within a batch
        missing = [keys.index(key) for key, entry in known.items() if entry is None]
        if missing:
            chosen = torch.tensor(missing, device=inputs[self.adapter.pixel_inputs[0]].device)
            pixels = {name: inputs[name].index_select(0, chosen) for name in self.adapter.pixel_inputs if name in inputs}
            for index, entry in zip(missing, self.adapter.encode(getattr(base, "module", base), pixels)):
                self._store(keys[index], entry)
                known[keys[index]] = entry
            self.computed += len(missing)
        self.hits += len(keys) - len(missing)
        found = {index: known[key] for index, key in enumerate(keys)}
        for name in self.adapter.pixel_inputs:
            inputs.pop(name, None)
        device = next(model.parameters()).device
        entries = [{name: tensor.to(device) for name, tensor in found[index].items()} for index in range(len(keys))]
        inputs.update(self.adapter.to_kwargs(entries))
        return inputs

    def describe(self) -> str:
        total = self.hits + self.computed
        return (f"feature cache: {len(self.entries) + len(self.on_disk)} images ({self.bytes_in_memory / 2**20:.1f} MiB "
                f"in memory, {len(self.on_disk)} on disk); {self.hits} of {total} vision forwards reused")

    def summary(self) -> dict:
        return {"images": len(self.entries) + len(self.on_disk), "memory_bytes": self.bytes_in_memory,
                "on_disk": len(self.on_disk), "reused": self.hits, "computed": self.computed}
