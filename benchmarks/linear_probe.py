"""The baseline every VLM classification number here stands beside: logistic regression on frozen DINOv2-S
features ([CLS, mean patch], standardised) of the same training images at the same input size.

    python benchmarks/linear_probe.py --data zoo:digits --train-images 600 --image-size 112
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def dinov2_features(records, image_size: int, batch: int = 64) -> np.ndarray:
    from transformers import AutoImageProcessor, Dinov2Model

    from visiontune.zoo.prepare import zoo_model_path

    folder = zoo_model_path("dinov2-small")
    model = Dinov2Model.from_pretrained(folder).eval().to("cuda" if torch.cuda.is_available() else "cpu")
    processor = AutoImageProcessor.from_pretrained(folder)
    processor.size, processor.do_center_crop = {"height": image_size, "width": image_size}, False
    out = []
    with torch.inference_mode():
        for start in range(0, len(records), batch):
            images = [r.load_image() for r in records[start:start + batch]]
            pixels = processor(images, return_tensors="pt")["pixel_values"].to(model.device)
            hidden = model(pixel_values=pixels).last_hidden_state
            out.append(torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], dim=1).float().cpu().numpy())
    return np.concatenate(out)


def linear_probe(train, test, classes, image_size: int) -> dict:
    """Test accuracy of scikit-learn LogisticRegression trained on `train`'s frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    x_train, x_test = dinov2_features(train, image_size), dinov2_features(test, image_size)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(x_train), [classes.index(r.label) for r in train])
    predicted = probe.predict(scaler.transform(x_test))
    accuracy = float(np.mean(predicted == np.array([classes.index(r.label) for r in test])))
    return {"accuracy": accuracy, "train_images": len(train), "test_images": len(test), "image_size": image_size,
            "seconds": round(time.perf_counter() - started, 1)}


def probe_dataset(data: str, train_split: str, test_split: str, train_images: int, test_images: int | None,
                  image_size: int, seed: int = 0) -> dict:
    """The probe on the same records `visiontune train --shuffle --seed S --max-samples N` would use."""
    from visiontune.data.loading import DataSpec, load_labelled_records

    train, classes = load_labelled_records(DataSpec(data, split=train_split, shuffle=True, seed=seed,
                                                    max_samples=train_images), log=lambda *_: None)
    test, _ = load_labelled_records(DataSpec(data, split=test_split, max_samples=test_images), log=lambda *_: None)
    return linear_probe(train, test, classes, image_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="zoo:fashion-mnist")
    parser.add_argument("--split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--train-images", type=int, default=1600)
    parser.add_argument("--test-images", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(probe_dataset(args.data, args.split, args.test_split, args.train_images, args.test_images,
                                   args.image_size, args.seed)))


if __name__ == "__main__":
    main()
