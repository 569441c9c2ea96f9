"""Chat: instruction / visual question answering fine-tuning on conversations with images.

Data: LLaVA `conversations`, ShareGPT or Hugging Face `messages` rows (`formats.py`),
multi-turn, one or several images in the first user turn. Training: one example per conversation, the loss
on every assistant turn and on nothing else. Evaluation: the conversation up to its last answer is the
prompt (earlier answers as history), that answer the reference; exact match and token F1
(`metrics/text.py`), plus the caption metrics on the free text. `predict` on plain images asks `--prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...data.records import Record
from ..base import Example, Task, system_turn
from .formats import load_conversation_records


@dataclass
class ChatInput:
    """An evaluation conversation at inference: its images and the messages before the answer to give."""

    images: list
    messages: list[dict]


def _text(message: dict) -> str:
    return " ".join(part["text"] for part in message["content"] if part["type"] == "text")


class ChatTask(Task):
    name = "chat"
    default_prompt = "Describe this image."
    max_new_tokens = 128
    one_example_per_record = True

    @classmethod
    def load_records(cls, spec, known: dict | None = None, log=print) -> tuple[list[Record], dict]:
        records = load_conversation_records(spec, log=log)
        return records, {}

    def _with_system(self, messages: list[dict]) -> list[dict]:
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            return [system_turn(self.system_prompt)] + messages
        return messages

    def describe_training_data(self, dataset, records: list[Record]) -> list[str]:
        if dataset.lazy:
            return [f"conversations: {len(records):,}, read as training reaches them"]
        answers = sum(m["role"] == "assistant" for r in records for m in r.conversation)
        images = sum(1 + len(r.more_images) for r in records)
        return [f"conversations: {len(records)} with {answers} answers trained on and {images} images"]

    def training_examples(self, record: Record) -> list[Example]:
        messages = self._with_system(record.conversation)
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return [Example(messages[:first], _text(messages[first]), None, continuation=messages[first + 1:])]

    def training_images(self, record: Record) -> list:
        return record.load_images()

    def parse(self, text: str) -> str:
        return text.strip()

    # --- inference -----------------------------------------------------------------------------------------
    def inference_input(self, record: Record) -> ChatInput:
        messages = self._with_system(record.conversation)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return ChatInput(record.load_images(), messages[:last])

    def results(self, predictor, inputs: list) -> list[dict]:
        """`inputs`: conversations (evaluation) or plain images (`predict`, asked the task's prompt)."""
        images = [item.images if isinstance(item, ChatInput) else item for item in inputs]
        messages = [item.messages if isinstance(item, ChatInput) else self.messages() for item in inputs]
        texts = predictor.generate(images, messages)["texts"]
        return [{"prediction": self.parse(text), "text": text} for text in texts]

    # --- evaluation ----------------------------------------------------------------------------------------
    def references(self, record: Record) -> str:
        return _text([m for m in record.conversation if m["role"] == "assistant"][-1])

    def prediction_of(self, row: dict) -> str:
        return row.get("prediction", row.get("text", row.get("answer")))

    def score(self, predictions: dict[str, str], references: dict[str, str]) -> dict:
        from ...metrics.caption import caption_metrics
        from ...metrics.text import answer_metrics

        metrics = answer_metrics(predictions, references)
        free_text = caption_metrics({k: predictions.get(k) or "" for k in references},
                                    {k: [v] for k, v in references.items()})
        per_image = {key: {**free_text["per_image"].get(key, {}), **scores} for key, scores in metrics["per_image"].items()}
        return {**free_text, **metrics, "per_image": per_image}

    def sample_lines(self, prediction: str, reference: str) -> list[str]:
        return ["pred: " + str(prediction), "ref: " + reference]
