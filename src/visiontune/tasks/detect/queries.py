"""Detection with a VLM at inference: ask each image the task's queries, parse the boxes, score each box.

A box's score is the model's own confidence in it: exp of the mean log-probability of the tokens that
write the box (its brackets and four numbers), so a hesitant box ranks below a sure one and COCO AP,
which sorts detections by score, is meaningful. Boxes under the task's `score_threshold` are dropped.
Queries run `predictor.batch_size` prompts per generate call.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter


def token_ends(pieces: list[str]) -> list[int]:
    """Character offset where each token's text ends in the reply its pieces make."""
    return list(itertools.accumulate(len(piece) for piece in pieces))


def box_scores(text_spans: list[tuple[int, int]], ends: list[int], log_probs: list[float]) -> list[float]:
    """exp(mean log-prob) of the tokens overlapping each character span."""
    scores = []
    for start, end in text_spans:
        chosen = [log_prob for index, log_prob in enumerate(log_probs)
                  if (ends[index - 1] if index else 0) < end and ends[index] > start]
        scores.append(math.exp(sum(chosen) / len(chosen)) if chosen else 0.0)
    return scores


def detect_boxes(predictor, images: list) -> list[dict]:
    """One row per image: `boxes` [{label, box (pixel x1,y1,x2,y2), score}], `replies` {query: text},
    `queries`, `parse_failures` and `problems` (what the parser fixed or dropped)."""
    task = predictor.task
    queries = task.inference_queries()
    prompts = [(index, asked) for index in range(len(images)) for asked in queries]
    rows = [{"boxes": [], "replies": {}, "queries": 0, "parse_failures": 0, "problems": Counter()} for _ in images]
    for start in range(0, len(prompts), predictor.batch_size):
        chunk = prompts[start:start + predictor.batch_size]
        generated = predictor.generate([images[i] for i, _ in chunk], [task.query_messages(a) for _, a in chunk],
                                       with_scores=True, stop_when=task.reply_is_over)
        for (index, asked), text, tokens, log_probs in zip(chunk, generated["texts"], generated["tokens"],
                                                           generated["log_probs"]):
            row, (width, height) = rows[index], images[index].size
            pieces = predictor.token_pieces(tokens)
            reply = "".join(pieces)  # unstripped: spans index into this
            parsed = task.parse(reply)
            row["replies"][", ".join(asked)] = text
            row["queries"] += 1
            row["parse_failures"] += parsed.failed
            row["problems"].update(parsed.problems)
            # A per-class query's answer may only name the asked class; others are counted, not kept.
            kept = [(i, box) for i, box in enumerate(parsed.boxes) if box[0] in asked]
            row["problems"]["not_asked"] += len(parsed.boxes) - len(kept)
            spans = [parsed.spans[i] for i, _ in kept]
            scores = box_scores(spans, token_ends(pieces), log_probs) if kept else []
            for (_, (name, grid_box)), score in zip(kept, scores):
                if score >= task.score_threshold:
                    row["boxes"].append({"label": name, "box": task.to_pixels(grid_box, width, height),
                                         "score": round(score, 5)})
    for row in rows:
        row["problems"] = {key: value for key, value in row["problems"].items() if value}
    return rows
