"""`OnnxVLM`: an exported image-text-to-text model run with onnxruntime, numpy, tokenizers and Pillow (no torch).

Reads the folder `visiontune export --format onnx` writes: `onnx/{vision_encoder,embed_tokens,
decoder_model_merged}[_variant].onnx` and `onnx/export.json` beside the tokenizer, chat template and
configs. Prompts are rendered with the model's chat template, image placeholders expanded to the model's
image-token count, left-padded; image features replace the image tokens' embeddings; positions are
`cumsum(attention mask) - 1`, as in transformers' generation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..inference.token_text import token_pieces
from .chat import answer_suffix, flatten_image_parts, render_chat
from .images import image_preparation

VARIANT_SUFFIXES = {"fp32": "", "int8": "_int8", "q4": "_q4", "fp16": "_fp16"}
GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
EXPORT_FILE = "export.json"


def export_folder(path: str | Path) -> Path | None:
    """The export's root (the folder holding `onnx/export.json`) for the root or its `onnx/` folder, else None."""
    path = Path(path)
    for root in (path, path.parent):
        if (root / "onnx" / EXPORT_FILE).is_file():
            return root
    return None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def choose_tokens(logp: np.ndarray, sampling, rng: np.random.Generator | None) -> np.ndarray:
    """(rows,) the next token of each row from its log-probabilities: the most likely (greedy, `sampling` None or
    temperature 0), else drawn at `sampling.temperature` from the smallest set holding `sampling.top_p`."""
    if sampling is None or sampling.greedy:
        return logp.argmax(axis=-1)
    chosen = np.empty(len(logp), dtype=np.int64)
    for row, values in enumerate(logp / sampling.temperature):
        order = np.argsort(-values)
        probabilities = np.exp(values[order] - values[order[0]])
        probabilities /= probabilities.sum()
        kept = min(len(order), int(np.searchsorted(np.cumsum(probabilities), sampling.top_p)) + 1)
        chosen[row] = order[rng.choice(kept, p=probabilities[:kept] / probabilities[:kept].sum())]
    return chosen


class OnnxVLM:
    name = "ONNX"

    def __init__(self, path: str | Path, variant: str = "fp32", threads: int | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        root = export_folder(path)
        if root is None:
            raise FileNotFoundError(f"{path}: no onnx/{EXPORT_FILE}; make one with visiontune export --format onnx")
        self.root, self.variant = root, variant
        self.info = json.loads((root / "onnx" / EXPORT_FILE).read_text())
        if variant not in self.info["variants"]:
            raise ValueError(f"{root}: no {variant} variant; this export has {', '.join(self.info['variants'])}")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {name: onnxruntime.InferenceSession(
            str(root / "onnx" / f"{name}{VARIANT_SUFFIXES[variant]}.onnx"), options, providers=["CPUExecutionProvider"])
            for name in GRAPHS}
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.chat_template = (root / "chat_template.jinja").read_text()
        self.prepare_images = image_preparation(self.info)
        self.end_ids = set(self.info["end_token_ids"])
        self.pad_id = self.info["pad_token_id"]

    # --- prompts ---------------------------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if self.info["flatten_image_parts"]:
            messages = [flatten_image_parts(m, self.info["image_token"]) for m in messages]
        return render_chat(self.chat_template, messages, add_generation_prompt, **self.info["template_tokens"])

    def answer_tokens(self, messages: list[dict], target: str) -> list[int]:
        return self.encode_text(answer_suffix(self.render, messages, target), special=False)

    def token_pieces(self, tokens: list[int]) -> list[str]:
        return token_pieces(self.tokenizer, tokens)

    def encode_text(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=special).ids

    def encode_prompts(self, images: list, messages: list[list[dict]]) -> dict:
        """Left-padded `input_ids` / `attention_mask` and the vision encoder's inputs (one image per prompt)."""
        vision, placeholders = self.prepare_images(images)
        token = self.info["image_token"]
        rows = []
        for conversation, placeholder in zip(messages, placeholders):
            text = self.render(conversation)
            if text.count(token) != 1:
                raise ValueError(f"the prompt has {text.count(token)} {token} placeholders; the ONNX runtime takes "
                                 f"one image per prompt")
            rows.append(self.encode_text(text.replace(token, placeholder)))
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, width - len(row):], mask[i, width - len(row):] = row, 1
        return {"input_ids": ids, "attention_mask": mask, **vision}

    # --- model calls ------------------------------------------------------------------------------------------
    def embed(self, input_ids: np.ndarray, vision_inputs: dict | None = None) -> np.ndarray:
        """Token embeddings, with the vision encoder's rows in place of the image tokens when `vision_inputs`
        (pixel_values, and pixel_attention_mask for Idefics3) are given."""
        embeds = self.sessions["embed_tokens"].run(None, {"input_ids": input_ids})[0]
        if vision_inputs:
            session = self.sessions["vision_encoder"]
            features = session.run(None, {i.name: vision_inputs[i.name] for i in session.get_inputs()})[0]
            features = features.reshape(-1, features.shape[-1])
            where = input_ids == self.info["image_token_id"]
            if int(where.sum()) != features.shape[0]:
                raise ValueError(f"{int(where.sum())} image tokens in the prompts but {features.shape[0]} image "
                                 f"feature rows")
            embeds[where] = features.astype(embeds.dtype)
        return embeds

    def empty_past(self, rows: int) -> list[np.ndarray]:
        shape = (rows, self.info["kv_heads"], 0, self.info["head_dim"])
        return [np.zeros(shape, dtype=np.float32) for _ in range(2 * self.info["layers"])]

    def decode(self, embeds: np.ndarray, attention_mask: np.ndarray, positions: np.ndarray,
               past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {"inputs_embeds": embeds, "attention_mask": attention_mask, "position_ids": positions}
        for i in range(self.info["layers"]):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = past[2 * i], past[2 * i + 1]
        logits, *present = self.sessions["decoder_model_merged"].run(None, feeds)
        return logits, present

    def prompt_pass(self, batch: dict) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(last position's logits, cache, each row's last position) after the prompts."""
        mask = batch["attention_mask"]
        positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)
        vision = {k: v for k, v in batch.items() if k in ("pixel_values", "pixel_attention_mask")}
        embeds = self.embed(batch["input_ids"], vision)
        logits, present = self.decode(embeds, mask, positions, self.empty_past(len(mask)))
        return logits[:, -1], present, positions[:, -1]

    def generate(self, images: list, messages: list[list[dict]], max_new_tokens: int,
                 stop_when: Callable[[str], bool] | None = None, sampling=None,
                 on_token: Callable[[int, int], None] | None = None) -> dict:
        """Replies: `texts` (stripped), `tokens` (up to and including the end token), `log_probs`; greedy, or
        drawn as `sampling` (inference/protocol.py's `Sampling`) says. A reply ends early once `stop_when(its
        text so far)` holds; `on_token(row, token)` sees each token as it comes."""
        rng = np.random.default_rng(sampling.seed) if sampling is not None and not sampling.greedy else None
        batch = self.encode_prompts(images, messages)
        logits, past, last = self.prompt_pass(batch)
        mask = batch["attention_mask"]
        rows = len(mask)
        tokens, log_probs = [[] for _ in range(rows)], [[] for _ in range(rows)]
        done = np.zeros(rows, dtype=bool)
        for _ in range(max_new_tokens):
            logp = log_softmax(logits)
            chosen = choose_tokens(logp, sampling, rng)
            for row in np.flatnonzero(~done):
                tokens[row].append(int(chosen[row]))
                log_probs[row].append(float(logp[row, chosen[row]]))
                if on_token is not None:
                    on_token(int(row), int(chosen[row]))
                done[row] = int(chosen[row]) in self.end_ids or (
                    stop_when is not None and stop_when(self.tokenizer.decode(tokens[row], skip_special_tokens=True)))
            if done.all():
                break
            chosen = np.where(done, self.pad_id, chosen)
            mask = np.concatenate([mask, np.ones((rows, 1), dtype=mask.dtype)], axis=1)
            last = last + 1
            step, past = self.decode(self.embed(chosen[:, None].astype(np.int64)), mask, last[:, None], past)
            logits = step[:, -1]
        texts = [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in tokens]
        return {"texts": texts, "tokens": tokens, "log_probs": log_probs}

    def answer_log_likelihoods(self, images: list, messages: list[list[dict]], answers: list[list[int]],
                               rows_per_pass: int = 64) -> np.ndarray:
        """(images, answers) summed log-probability of each answer's tokens after each prompt. The prompt runs
        once; its cache is repeated for every answer, answers right-padded (causal attention: padding after a
        token never changes that token's logits)."""
        batch = self.encode_prompts(images, messages)
        logits, past, last = self.prompt_pass(batch)
        first = log_softmax(logits)
        totals = first[:, [a[0] for a in answers]].astype(np.float64)
        width = max(len(a) for a in answers) - 1
        if width == 0:
            return totals
        tails = np.full((len(answers), width), self.pad_id, dtype=np.int64)
        valid = np.zeros((len(answers), width), dtype=bool)  # position k predicts answer token k + 1
        for row, answer in enumerate(answers):
            tails[row, : len(answer) - 1], valid[row, : len(answer) - 1] = answer[:-1], True
        targets = np.array([a[1:] + [0] * (width + 1 - len(a)) for a in answers], dtype=np.int64)
        per_pass = max(1, rows_per_pass // len(answers))
        mask = batch["attention_mask"]
        tail_embeds = self.embed(tails)  # the same for every image
        for start in range(0, len(images), per_pass):
            chunk = np.arange(start, min(start + per_pass, len(images)))
            rows = len(chunk) * len(answers)
            repeated = [np.repeat(p[chunk], len(answers), axis=0) for p in past]
            attention = np.concatenate([np.repeat(mask[chunk], len(answers), axis=0),
                                        np.ones((rows, width), dtype=mask.dtype)], axis=1)
            positions = np.repeat(last[chunk], len(answers))[:, None] + 1 + np.arange(width)[None]
            step, _ = self.decode(np.tile(tail_embeds, (len(chunk), 1, 1)), attention, positions, repeated)
            logp = log_softmax(step)  # (rows, width, vocab)
            picked = np.take_along_axis(logp, np.tile(targets, (len(chunk), 1))[..., None], axis=-1)[..., 0]
            summed = (picked * np.tile(valid, (len(chunk), 1))).sum(axis=1).reshape(len(chunk), len(answers))
            totals[chunk] += summed
        return totals
