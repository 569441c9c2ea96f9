"""The composed VLM's processor: the vision encoder's image processor + the LM's tokenizer and chat template.

Each `<image>` in the text becomes `image_seq_len` image tokens; every image is resized to one square
size, so the count is fixed. Chat messages in the structured form (`{"type": "image"}` / `{"type": "text"}`
parts) are flattened into the plain strings an LM chat template expects, with `<image>` where the image
goes, then rendered by the LM's own template.
"""

from __future__ import annotations

from transformers import BatchFeature, ProcessorMixin

IMAGE_TOKEN = "<image>"


def flatten_content(message: dict, image_token: str = IMAGE_TOKEN) -> dict:
    content = message["content"]
    if isinstance(content, str):
        return message
    parts = []
    for part in content:
        if part.get("type") == "image":
            parts.append(image_token + "\n")
        elif part.get("type") == "text":
            parts.append(part["text"])
        else:
            raise ValueError(f"composed VLMs take image and text message parts, not {part.get('type')!r}")
    return {**message, "content": "".join(parts)}


class ComposedVLMProcessor(ProcessorMixin):
    def __init__(self, image_processor, tokenizer, image_seq_len: int = 64, image_token: str = IMAGE_TOKEN,
                 chat_template: str | None = None, **kwargs):
        self.image_seq_len = image_seq_len
        self.image_token = image_token
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    def apply_chat_template(self, conversation, chat_template=None, add_generation_prompt: bool = False,
                            tokenize: bool = False, **kwargs):
        if tokenize:
            raise ValueError("this processor renders chat templates as text; call it on the text and the images "
                             "(processor(text=..., images=...)) to get tensors")
        flat = [flatten_content(message, self.image_token) for message in conversation]
        return self.tokenizer.apply_chat_template(flat, chat_template=chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", padding=False, **kwargs) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text or [])
        flat_images = []
        for item in images or []:
            flat_images.extend(item if isinstance(item, (list, tuple)) else [item])
        placeholders = sum(t.count(self.image_token) for t in texts)
        if placeholders != len(flat_images):
            raise ValueError(f"the text has {placeholders} {self.image_token} placeholders but {len(flat_images)} "
                             f"images were given; put one {self.image_token} (an image part of a chat message) "
                             f"per image")
        expanded = [t.replace(self.image_token, self.image_token * self.image_seq_len) for t in texts]
        encoded = self.tokenizer(expanded, padding=padding, return_tensors=return_tensors,
                                 **{k: v for k, v in kwargs.items() if k in ("truncation", "max_length")})
        data = dict(encoded)
        if flat_images:
            pixels = self.image_processor([image.convert("RGB") if hasattr(image, "convert") else image
                                           for image in flat_images], return_tensors=return_tensors)
            data["pixel_values"] = pixels["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]
