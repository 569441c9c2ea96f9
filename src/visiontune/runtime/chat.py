"""Render a chat template the way transformers does (a sandboxed jinja2 environment, trimmed blocks)."""

from __future__ import annotations

from functools import lru_cache


def _raise(message: str):
    raise ValueError(f"chat template: {message}")


@lru_cache(maxsize=8)
def _compiled(template: str):
    import json

    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
    environment.globals["raise_exception"] = _raise
    environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
    return environment.from_string(template)


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, **special_tokens) -> str:
    return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                      **special_tokens)


def flatten_image_parts(message: dict, image_token: str) -> dict:
    """Structured content ({"type": "image"} / {"type": "text"} parts) as one string with the image token."""
    content = message["content"]
    if isinstance(content, str):
        return message
    text = "".join(image_token + "\n" if part.get("type") == "image" else part.get("text", "") for part in content)
    return {**message, "content": text}


def answer_suffix(render, messages: list[dict], target: str) -> str:
    """The text a chat template puts after the generation prompt for this answer; `render(messages,
    add_generation_prompt)` renders with the model's template."""
    prompt = render(messages, True)
    full = render(messages + [{"role": "assistant", "content": [{"type": "text", "text": target}]}], False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without the answer")
    return full[len(prompt):]
