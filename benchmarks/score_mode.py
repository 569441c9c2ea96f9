"""Score-mode classification speed: visiontune's answer trie vs one forward pass per (image, class).

Both sides score every class of every image: the summed log-probability of the class name as the model's
answer, up to and including the end-of-turn token, with the same loaded model on the same images.
*per-class forward* (what one writes with plain transformers): each (image, class) pair is a whole
prompt + answer sequence, right-padded, `--batch` images x all classes per forward pass. *visiontune*:
`Predictor(mode="score")`: each prompt once, then all classes' answer-token trie in one pass over its cache.
Reports images/s (model loading excluded), the largest |difference| of any log-likelihood between the two
sides, and each side's accuracy.
    python benchmarks/score_mode.py --model runs/quickstart/classify --data zoo:fashion-mnist --count 256
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def per_class_forward(model, processor, task, images: list, batch: int) -> torch.Tensor:
    """(images, classes) log-likelihoods, every (image, class) pair as its own full sequence."""
    from visiontune.models.prompt_encoding import IGNORE_INDEX, VLMCollator
    from visiontune.models.vlm import end_token_ids

    collator, ends = VLMCollator(processor), torch.tensor(sorted(end_token_ids(model, processor.tokenizer)))
    rows = []
    for start in range(0, len(images), batch):
        examples = [{"image": image, "messages": task.messages(), "target": task.target_text(name), "where": "x"}
                    for image in images[start:start + batch] for name in task.classes]
        inputs = collator(examples)
        labels = inputs.pop("labels")[:, 1:]
        logp = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
        answer = labels != IGNORE_INDEX
        # up to and including the first end-of-turn token of each answer
        after_end = (torch.isin(labels, ends) & answer).int().cumsum(1) - torch.isin(labels, ends).int()
        counted = answer & (after_end == 0)
        token_logp = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        rows.append((token_logp * counted).sum(1).view(-1, len(task.classes)))
    return torch.cat(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a classify run folder (e.g. the quickstart's classify/)")
    parser.add_argument("--data", default="zoo:fashion-mnist")
    parser.add_argument("--split", default="test")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="images per batch, both sides")
    args = parser.parse_args()
    from visiontune.data.loading import DataSpec, load_labelled_records
    from visiontune.inference.predictor import Predictor
    from visiontune.models.vlm import load_for_inference
    from visiontune.tasks import task_from_metadata

    model, processor, metadata = load_for_inference(args.model, log=lambda *_: None)
    task = task_from_metadata(metadata)
    split = args.split if args.data.startswith("zoo:") else None
    records, _ = load_labelled_records(DataSpec(path=args.data, split=split, max_samples=args.count))
    images, truth = [r.load_image() for r in records], [task.classes.index(r.label) for r in records]
    torch.set_grad_enabled(False)
    predictor = Predictor(model, processor, task, batch_size=args.batch, mode="score")
    sides = {
        "per-class forward": lambda: per_class_forward(model, processor, task, images, args.batch),
        "visiontune": lambda: torch.tensor([[row["log_likelihoods"][name] for name in task.classes]
                                            for row in predictor.predict(images, progress=False)]),
    }
    # warm-up: first-call allocations and thread pools
    per_class_forward(model, processor, task, images[:2], 2)
    predictor.predict(images[:2], progress=False)
    results, scores = {}, {}
    for name, side in sides.items():
        start = time.perf_counter()
        scores[name] = side()
        seconds = time.perf_counter() - start
        accuracy = float((scores[name].argmax(1) == torch.tensor(truth)).float().mean())
        results[name] = {"images_per_second": round(len(images) / seconds, 2), "accuracy": round(accuracy, 4)}
    difference = float((scores["visiontune"] - scores["per-class forward"]).abs().max())
    ratio = results["visiontune"]["images_per_second"] / results["per-class forward"]["images_per_second"]
    print(json.dumps({"model": args.model, "images": len(images), "classes": len(task.classes), "batch": args.batch,
                      "threads": torch.get_num_threads(), **results, "speedup": round(ratio, 2),
                      "max_abs_log_likelihood_difference": difference}, indent=1))


if __name__ == "__main__":
    main()
