"""Classification's own options: `train` flags, `predict`/`eval` flags, YAML keys and Python keywords alike."""

from __future__ import annotations

from dataclasses import dataclass, field

DESCRIPTIONS_HELP = "file of 'class: description' lines, shown to the model with the classes"


@dataclass(kw_only=True)
class TrainOptions:
    class_descriptions: str | None = field(default=None, metadata={"help": DESCRIPTIONS_HELP})
    reasoning: bool = field(default=False, metadata={"help": "train 'Reasoning: …\\nAnswer: <class>'"})
    calibrate: bool = field(default=True, metadata={"help": "fit a softmax temperature on --eval-data"})


@dataclass(kw_only=True)
class InferenceOptions:
    class_descriptions: str | None = field(default=None, metadata={"help": DESCRIPTIONS_HELP + " (default: the run's)"})
    top_k: int = field(default=5, metadata={"help": "score mode: classes listed in each result"})
    length_normalise: bool = field(default=False, metadata={
        "help": "score mode: rank classes by their mean token log-probability instead of the sum"})
