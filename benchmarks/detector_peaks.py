"""Local-peak decoding (`peaks.py`) vs the plain top-k, on the same trained dense head.

Cached-feature study (`detector_losses.py`): the dense detector trained with --dense-loss (shared with
`detector_relation_stage.py`: trained once, then loaded from --output) is decoded every way on the validation
canvases: the plain top-k, a class-wise greedy NMS at IoU 0.7 (for reference only; the detector never runs
NMS), and the local peaks on each level or across levels, 3x3 or 5x5.

    python benchmarks/detector_peaks.py --items .bench/fmnist --backbone .bench/dinov2-small --val 240 \
        --output R --dense-loss bce|focal
"""

from __future__ import annotations

import dataclasses

import torch

from detector_losses import (
    cached_dense_head,
    prepare_study,
    study_arguments,
    study_row,
    to_predictions,
)
from detector_relation_stage import class_nms, dense_outputs
from visiontune.models.detector.evaluation import DUPLICATE_IOU

DECODINGS = {"plain top-k": (0, False), "peaks 3x3, its level": (3, False), "peaks 3x3, across levels": (3, True),
             "peaks 5x5, across levels": (5, True)}


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--dense-loss", default="bce")
    args = parser.parse_args()
    study = prepare_study(args)
    val, classes = study["val"], study["config"].classes
    model = cached_dense_head(args, study, args.dense_loss).eval()
    outputs = dense_outputs(model, study["val_features"], study["config"].image_size)
    sizes = [(record.width, record.height) for record in val]
    for name, (window, across) in DECODINGS.items():
        model.config = dataclasses.replace(model.config, peak_window=window, peak_across_levels=across)
        with torch.no_grad():
            batches = [model.top_detections({"logits": outputs["logits"][s:s + 16], "boxes": outputs["boxes"][s:s + 16],
                                             "level_sizes": outputs["level_sizes"]}) for s in range(0, len(val), 16)]
        predictions = to_predictions(batches, sizes, classes)
        print(name, study_row(predictions, val, classes, study["ids"]), flush=True)
        if window == 0:
            print("NMS 0.7 (reference)", study_row(class_nms(predictions, DUPLICATE_IOU), val, classes, study["ids"]),
                  flush=True)


if __name__ == "__main__":
    main()
