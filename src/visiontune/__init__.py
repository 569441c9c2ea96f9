"""visiontune: teach small vision-language models to see your own data, and ship the result.

The Python API that the CLI wraps: `train`, `predict`, `evaluate`, `merge`, `build_tiny_model`.
Imports are lazy so `import visiontune` stays fast.
"""

__version__ = "0.1.0"
__all__ = ["EvalConfig", "PredictConfig", "TrainConfig", "build_tiny_model", "evaluate", "merge", "predict", "train"]


def __getattr__(name):
    if name == "train":
        from .api.train import train

        return train
    if name == "predict":
        from .api.predict import predict

        return predict
    if name == "evaluate":
        from .api.evaluate import evaluate

        return evaluate
    if name == "merge":
        from .export.merge import merge

        return merge
    if name == "build_tiny_model":
        from .models.tiny import build_tiny_model

        return build_tiny_model
    if name in ("TrainConfig", "PredictConfig", "EvalConfig"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'visiontune' has no attribute {name!r}")
