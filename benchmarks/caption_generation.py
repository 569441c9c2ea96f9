"""Caption generation: `visiontune predict` vs the common eval loop, same model, same images.

Baseline (as the common recipe evaluates): batches of 4, default `generate`, processor with its default
(right) padding side as loaded. visiontune: its Predictor (left padding, greedy, --batch images at once).
    python benchmarks/caption_generation.py --model /tmp/tiny-smolvlm --images 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from visiontune.data.builtin.shapes import write_shapes_dataset
    from visiontune.data.images import load_image
    from visiontune.inference.predictor import Predictor

    folder = write_shapes_dataset(Path(tempfile.mkdtemp()), count=args.images, size=384)["images"]
    files = sorted(folder.glob("*.png"))
    images = [load_image(f) for f in files]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype).to(device).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image in one sentence."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), 4):
            chunk = images[i:i + 4]
            batch = processor(text=[prompt] * len(chunk), images=[[im] for im in chunk], return_tensors="pt",
                              padding=True).to(device)
            model.generate(**batch, max_new_tokens=args.max_new_tokens)
    sync()
    baseline = len(images) / (time.perf_counter() - start)

    predictor = Predictor(model, processor, __import__("visiontune.tasks", fromlist=["get_task"]).get_task("caption"),
                          batch_size=args.batch, max_new_tokens=args.max_new_tokens)
    sync()
    start = time.perf_counter()
    predictor.predict([str(f) for f in files], progress=False)
    sync()
    ours = len(images) / (time.perf_counter() - start)
    print(f"baseline (batch 4): {baseline:.2f} images/s; visiontune (batch {args.batch}): {ours:.2f} images/s; "
          f"ratio {ours / baseline:.2f}x on {device}")


if __name__ == "__main__":
    main()
