"""Batches for image-text-to-text models, built with the model's own processor and chat template.

The prompt (system + user turn with the image) goes through the processor, which expands image tokens
and batches pixels its own way; the answer (the assistant turn as the chat template renders it, end-of-turn
token included) is tokenized on its own and appended, exactly as the model will see it when it continues
a prompt at inference. Labels are -100 everywhere but the answer. Rows are left-padded: all answers end
at the last position, which is what batched generation needs and lets the loss skip prompt logits.

A multi-turn conversation continues after the first answer: each later user turn is appended unlabelled and
each later assistant turn labelled, every piece as the chat template renders it (so every assistant turn is
trained on, never a user turn). Images belong to the prompt (the first user turn), which the processor
encodes with all of them.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


class PromptTooLongError(ValueError):
    pass


def answer_suffix(processor, messages: list[dict], target: str) -> str:
    """The text the chat template puts after the generation prompt for this answer."""
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    answer_turn = {"role": "assistant", "content": [{"type": "text", "text": target}]}
    full = processor.apply_chat_template(messages + [answer_turn])
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without the answer; "
                         "cannot place the label mask (check the model's chat_template)")
    return full[len(prompt):]


def conversation_segments(processor, messages: list[dict], target: str,
                          continuation: list[dict] = ()) -> list[tuple[str, bool]]:
    """The text after the generation prompt as (piece, trained) pairs: the first answer, then for each later
    turn its rendered text; assistant turns are trained, user turns are not."""
    conversation = list(messages) + [{"role": "assistant", "content": [{"type": "text", "text": target}]}]
    segments = [(answer_suffix(processor, messages, target), True)]
    done = processor.apply_chat_template(conversation)
    for turn in continuation:
        if turn["role"] == "assistant":
            prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
            if prompt != done:
                segments.append((_after(prompt, done), False))
            conversation.append(turn)
            full = processor.apply_chat_template(conversation)
            segments.append((_after(full, prompt), True))
            done = full
        else:
            conversation.append(turn)
    return segments


def _after(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError("the chat template renders a conversation's earlier turns differently once later turns "
                         "follow; cannot place the label mask (check the model's chat_template)")
    return text[len(prefix):]


def trained_text(processor, messages: list[dict], target: str, continuation: list[dict] = ()) -> str:
    """Everything the label mask covers, as text (what the pre-flight check compares the mask with)."""
    return "".join(piece for piece, trained in conversation_segments(processor, messages, target, continuation)
                   if trained)


def left_pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    length = max(row.shape[0] for row in rows)
    out = torch.full((len(rows), length), value, dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        out[index, length - row.shape[0]:] = row
    return out


class VLMCollator:
    def __init__(self, processor, max_length: int | None = None, with_labels: bool = True,
                 image_keys: bool = False):
        """`image_keys`: add one hash per pixel unit (`image_keys`), for the frozen-vision feature cache."""
        self.processor = processor
        self.image_keys = image_keys
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.with_labels = with_labels
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.truncated_answers = 0

    def encode_prompts(self, images: list, messages: list[list[dict]]) -> dict:
        """Processor output for the prompts alone, left-padded (what `generate` takes). An item of `images` is
        one image or the list of a prompt's images."""
        texts = [self.processor.apply_chat_template(m, add_generation_prompt=True) for m in messages]
        self.tokenizer.padding_side = "left"
        grouped = [list(image) if isinstance(image, (list, tuple)) else [image] for image in images]
        return self.processor(text=texts, images=grouped, return_tensors="pt", padding=True)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.encode_prompts([e["image"] for e in examples], [e["messages"] for e in examples])
        keys = {}
        if self.image_keys and "pixel_values" in batch:
            from .vision_cache import IMAGE_KEYS, pixel_unit_keys

            keys[IMAGE_KEYS] = pixel_unit_keys(batch["pixel_values"])
        if not self.with_labels:
            return {**dict(batch), **keys}
        input_ids, attention = batch["input_ids"], batch["attention_mask"].bool()
        # Any other (batch, length) tensor from the processor (token_type_ids, mm_token_type_ids) follows the ids.
        per_token = [k for k, v in batch.items() if torch.is_tensor(v) and v.shape == input_ids.shape
                     and k not in ("input_ids", "attention_mask")]
        rows, labels, extra = [], [], {k: [] for k in per_token}
        for index, example in enumerate(examples):
            prompt = input_ids[index][attention[index]]
            pieces, trained = [], []
            for text, is_trained in conversation_segments(self.processor, example["messages"], example["target"],
                                                          example.get("continuation") or ()):
                ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
                pieces.append(ids)
                trained.append(ids if is_trained else torch.full_like(ids, IGNORE_INDEX))
            answer, answer_labels = torch.cat(pieces), torch.cat(trained)
            if self.max_length is not None:
                if prompt.shape[0] >= self.max_length:
                    raise PromptTooLongError(
                        f"{example.get('where', 'example')}: the prompt alone is {prompt.shape[0]} tokens (image tokens "
                        f"included) but --max-length is {self.max_length}; truncating would cut image tokens. Use "
                        f"--max-length {prompt.shape[0] + answer.shape[0]} or more, or a smaller --image-size")
                room = self.max_length - prompt.shape[0]
                if answer.shape[0] > room:
                    self.truncated_answers += 1
                    answer, answer_labels = answer[:room], answer_labels[:room]
            rows.append(torch.cat([prompt, answer]))
            labels.append(torch.cat([torch.full_like(prompt, IGNORE_INDEX), answer_labels]))
            for key in per_token:
                values = batch[key][index][attention[index]]
                extra[key].append(torch.cat([values, torch.zeros_like(answer)]))
        out = dict(batch)
        out["input_ids"] = left_pad(rows, self.pad_id)
        out["attention_mask"] = left_pad([torch.ones_like(r) for r in rows], 0)
        out["labels"] = left_pad(labels, IGNORE_INDEX)
        for key in per_token:
            out[key] = left_pad(extra[key], 0)
        if "weight" in examples[0]:  # --balance loss
            out["example_weight"] = torch.tensor([e["weight"] for e in examples], dtype=torch.float32)
        skipped = [problem for example in examples for problem in example.get("skipped", ())]
        if skipped:  # rows of a lazily read set skipped for these (training/examples.py); the trainer counts them
            out["skipped"] = skipped
        return {**out, **keys}
