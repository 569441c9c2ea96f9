"""Classification: name the image's class. Prompts list the classes; the answer is the class name, or
"Reasoning: …\\nAnswer: <class>" with --reasoning when the data has rationales.

`{classes}` and `{descriptions}` in the system prompt and the prompt template are filled in here.
"""

from __future__ import annotations

from pathlib import Path

from ..data.labels import check_class_names, read_class_descriptions
from ..data.records import Record
from .answer_parser import ParsedAnswer, parse_answer
from .base import Task

DEFAULT_SYSTEM_PROMPT = "You are an image classifier. The possible classes are: {classes}."
DESCRIPTIONS_BLOCK = "\nWhat each class looks like:\n{descriptions}"
DEFAULT_PROMPT = "Which class does this image show? Answer with one of: {classes}."
REASONING_INSTRUCTION = " Explain briefly, then give the class as 'Answer: <class>'."


class ClassifyTask(Task):
    name = "classify"
    default_prompt = DEFAULT_PROMPT

    def __init__(self, classes: list[str] | None = None, prompt: str | None = None, system_prompt: str | None = None,
                 descriptions: dict[str, str] | str | Path | None = None, reasoning: bool = False,
                 temperature: float = 1.0):
        """`descriptions`: {class: text}, or the path of a file of `class: description` lines.
        `temperature`: divides class log-likelihoods before the softmax in score mode (fitted after training)."""
        if not classes:
            raise ValueError("the classify task needs its class names: from the training data, --class-names, or "
                             "a visiontune run folder's visiontune.json")
        self.classes = check_class_names(list(classes), "--class-names")
        if isinstance(descriptions, (str, Path)):
            descriptions = read_class_descriptions(descriptions, self.classes)
        self.descriptions = dict(descriptions or {})
        self.reasoning = bool(reasoning)
        self.temperature = float(temperature)
        default_system = DEFAULT_SYSTEM_PROMPT + (DESCRIPTIONS_BLOCK if self.descriptions else "")
        super().__init__(prompt=prompt, system_prompt=system_prompt or default_system)

    def render(self, template: str) -> str:
        described = "\n".join(f"- {name}: {self.descriptions[name]}" for name in self.classes
                              if name in self.descriptions)
        return template.replace("{classes}", ", ".join(self.classes)).replace("{descriptions}", described)

    def messages(self, record: Record | None = None) -> list[dict]:
        prompt = self.render(self.prompt) + (REASONING_INSTRUCTION if self.reasoning else "")
        return [{"role": "system", "content": [{"type": "text", "text": self.render(self.system_prompt)}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]

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

    def references(self, record: Record) -> str:
        return record.label

    def metadata(self) -> dict:
        return {**super().metadata(), "classes": self.classes, "descriptions": self.descriptions,
                "reasoning": self.reasoning, "temperature": self.temperature}

    def score(self, predictions: dict[str, dict], references: dict[str, str]) -> dict:
        from ..metrics.classification import classification_metrics

        keys = list(references)
        probabilities = None
        if all(predictions[k].get("probabilities") for k in keys):
            probabilities = [[predictions[k]["probabilities"][c] for c in self.classes] for k in keys]
        return classification_metrics([references[k] for k in keys], [predictions[k].get("label") for k in keys],
                                      self.classes, probabilities)
