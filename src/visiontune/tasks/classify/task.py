"""Classification: name the image's class. Prompts list the classes; the answer is the class name, or
"Reasoning: …\\nAnswer: <class>" with --reasoning when the data has rationales.

`{classes}` and `{descriptions}` in the system prompt and the prompt template are filled in here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ...data.labels import check_class_names, read_class_descriptions
from ...data.loading import load_labelled_records
from ...data.records import Record
from ..base import Task, system_turn, user_turn
from .answer_parser import ParsedAnswer, parse_answer
from .ranking import ClassScorer

DEFAULT_SYSTEM_PROMPT = "You are an image classifier. The possible classes are: {classes}."
DESCRIPTIONS_BLOCK = "\nWhat each class looks like:\n{descriptions}"
DEFAULT_PROMPT = "Which class does this image show? Answer with one of: {classes}."
REASONING_INSTRUCTION = " Explain briefly, then give the class as 'Answer: <class>'."


class ClassifyTask(Task):
    name = "classify"
    keeps_skills_by_replay = True
    default_prompt = DEFAULT_PROMPT
    option_names = ("classes", "class_descriptions", "reasoning", "calibrate", "temperature", "top_k",
                    "length_normalise")
    prediction_modes = ("score", "generate")
    best_metric = "eval_accuracy"
    headline_metrics = ("accuracy", "macro_f1", "ece")

    def __init__(self, classes: list[str] | None = None, prompt: str | None = None, system_prompt: str | None = None,
                 class_descriptions: dict[str, str] | str | Path | None = None, reasoning: bool = False,
                 calibrate: bool = True,
                 temperature: float = 1.0, top_k: int = 5, length_normalise: bool = False):
        """`class_descriptions`: {class: text}, or the path of a file of `class: description` lines.
        `calibrate`: fit the temperature on the evaluation records after training.
        `temperature`: divides class log-likelihoods before the softmax in score mode (fitted after training).
        `top_k`: classes listed in a score-mode result; `length_normalise`: rank classes by their mean token
        log-probability instead of the sum."""
        if not classes:
            raise ValueError("the classify task needs its class names: from the training data, --class-names, or "
                             "a visiontune run folder's visiontune.json")
        self.classes = check_class_names(list(classes), "--class-names")
        if isinstance(class_descriptions, (str, Path)):
            class_descriptions = read_class_descriptions(class_descriptions, self.classes)
        self.descriptions = dict(class_descriptions or {})
        self.calibrate = bool(calibrate)
        self.reasoning = bool(reasoning)
        self.temperature = float(temperature)
        self.top_k, self.length_normalise = int(top_k), bool(length_normalise)
        default_system = DEFAULT_SYSTEM_PROMPT + (DESCRIPTIONS_BLOCK if self.descriptions else "")
        super().__init__(prompt=prompt, system_prompt=system_prompt or default_system)

    # --- data ----------------------------------------------------------------------------------------------
    @classmethod
    def load_records(cls, spec, known: dict | None = None, log=print) -> tuple[list[Record], dict]:
        """The classes: a trained model's (`known`), else --class-names, the source's own list, or the data's."""
        records, classes = load_labelled_records(spec, classes=(known or {}).get("classes"), log=log)
        return records, {"classes": classes}

    def describe_training_data(self, dataset, records: list[Record]) -> list[str]:
        from ...training.balancing import class_count_lines

        lines = class_count_lines(dataset.groups(), self.classes, "training examples")
        if self.reasoning:
            with_rationale = sum(bool(r.rationale) for r in records)
            lines.append(f"--reasoning: {with_rationale}/{len(records)} training rows have a rationale; the others' "
                         f"target is the class name alone" if with_rationale else "--reasoning: the data has no "
                         "rationale column (--rationale-column); targets are the class names alone")
        return lines

    def render(self, template: str) -> str:
        described = "\n".join(f"- {name}: {self.descriptions[name]}" for name in self.classes
                              if name in self.descriptions)
        return template.replace("{classes}", ", ".join(self.classes)).replace("{descriptions}", described)

    def messages(self, record: Record | None = None) -> list[dict]:
        prompt = self.render(self.prompt) + (REASONING_INSTRUCTION if self.reasoning else "")
        return [system_turn(self.render(self.system_prompt)), user_turn(prompt)]

    def target_text(self, label: str, rationale: str | None = None) -> str:
        if self.reasoning and rationale:
            return f"Reasoning: {rationale}\nAnswer: {label}"
        return label

    def training_targets(self, record: Record) -> list[str]:
        return [self.target_text(record.label, record.rationale)]

    def parse_full(self, text: str) -> ParsedAnswer:
        return parse_answer(text, self.classes)

    def parse(self, text: str) -> str | None:
        return self.parse_full(text).label

    def prediction_of(self, row: dict) -> dict:
        """A predictions-file row as `score` takes it: label (parsed from free text if need be) + probabilities."""
        label = row.get("label")
        if label not in self.classes:
            label = self.parse(str(row.get("prediction") or row.get("text") or label or ""))
        return {"label": label, "probabilities": row.get("probabilities"), "confidence": row.get("confidence")}

    def sample_lines(self, prediction: dict, reference: str) -> list[str]:
        confidence = prediction.get("confidence")
        shown = f"{prediction.get('label') or '(unmapped)'}" + (f" ({confidence:.2f})" if confidence is not None else "")
        mark = "ok" if prediction.get("label") == reference else "WRONG"
        return [f"pred: {shown} {mark}", f"true: {reference}"]

    # --- training hooks ------------------------------------------------------------------------------------
    def probe_targets(self, records: list[Record]):
        import numpy as np

        labels = np.array([self.classes.index(record.label) for record in records])
        return labels if len(set(labels.tolist())) >= 2 else None

    def in_training_eval(self, records: list[Record], processor, batch_size: int):
        from .calibration import classification_eval

        return classification_eval(records, self, processor, batch_size=batch_size)

    def after_training(self, model, processor, records: list[Record], batch_size: int, log=print) -> dict | None:
        """Fit the softmax temperature on the evaluation records (stored in the run's visiontune.json)."""
        from .calibration import calibrate

        if not self.calibrate:
            return None
        model.eval()
        return calibrate(model, processor, self, records, batch_size, log=log)

    def training_record(self, dataset, extra: dict) -> dict | None:
        """For people and tools reading the run: classes, prompts as rendered and the class counts."""
        from ...training.balancing import class_counts

        return {"system_prompt_rendered": self.render(self.system_prompt), "prompt_rendered": self.render(self.prompt),
                "class_counts": class_counts(dataset.groups(), self.classes), **extra}

    # --- inference -----------------------------------------------------------------------------------------
    def results(self, predictor, images: list) -> list[dict]:
        """Score mode: every class's probability (`scoring.py`); generate mode: free text, then parsed, with
        the probability of the whole reply as its confidence (not a distribution over classes)."""
        if predictor.mode == "score":
            if "class_scorer" not in predictor.cache:
                predictor.cache["class_scorer"] = ClassScorer(predictor, self)
            texts = predictor.generate_texts(images) if self.reasoning else [None] * len(images)
            return predictor.cache["class_scorer"].results(images, texts)
        texts, log_probs = predictor.generate_texts(images, with_log_probs=True)
        rows = []
        for text, log_prob in zip(texts, log_probs):
            parsed = self.parse_full(text)
            rows.append({"label": parsed.label, "confidence": math.exp(log_prob), "match": parsed.rule,
                         "text": text})
        return rows

    # --- evaluation ----------------------------------------------------------------------------------------
    def references(self, record: Record) -> str:
        return record.label

    def metadata(self) -> dict:
        return {**super().metadata(), "classes": self.classes, "class_descriptions": self.descriptions,
                "reasoning": self.reasoning, "temperature": self.temperature}

    def score(self, predictions: dict[str, dict], references: dict[str, str]) -> dict:
        from ...metrics.classification import classification_metrics

        keys = list(references)
        probabilities = None
        if all(predictions[k].get("probabilities") for k in keys):
            probabilities = [[predictions[k]["probabilities"][c] for c in self.classes] for k in keys]
        return classification_metrics([references[k] for k in keys], [predictions[k].get("label") for k in keys],
                                      self.classes, probabilities)

    def write_report(self, output, metrics: dict, header: dict, extras: dict) -> None:
        from ...report.classification import plot_confusion_matrix, plot_reliability

        (output / "results.json").write_text(json.dumps({"task": self.metadata(), **header, **metrics}, indent=2))
        plot_confusion_matrix(metrics["confusion_matrix"], output / "confusion_matrix.png")
        if metrics.get("calibration"):
            plot_reliability(metrics["calibration"], metrics["ece"], output / "reliability.png")
