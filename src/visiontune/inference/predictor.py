"""`Predictor`: a loaded model + processor + task; batched generation over images, and the task's answers.

Generation is batched (greedy/beam/sampling). What an answer is (a caption, a class with probabilities, boxes)
is the task's business: `results` hands each batch of images to `task.results(predictor, images)`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..models.compose.regions import slots_hidden
from ..models.feature_cache import FeatureCache
from ..models.prompt_encoding import VLMCollator, answer_suffix
from ..models.vision_cache import IMAGE_KEYS, pixel_unit_keys
from ..models.vlm import end_token_ids
from .answer_scoring import score_answers
from .base_predictor import BasePredictor
from .protocol import Sampling
from .token_text import token_pieces

FEATURE_MEMORY_BYTES = 512 * 2**20  # the most recent images' vision features kept while predicting


class ReplyStop(StoppingCriteria):
    """Ends a row when `stop_when(its reply so far)` holds, and remembers how many tokens the reply had then.
    A row that has written an end token is over and is not decoded again."""

    def __init__(self, decode: Callable[[list[int]], str], stop_when: Callable[[str], bool], prompt_length: int,
                 end_ids: set[int]):
        self.decode, self.stop_when, self.prompt_length, self.end_ids = decode, stop_when, prompt_length, end_ids
        self.lengths: dict[int, int] = {}
        self.ended: set[int] = set()

    def __call__(self, input_ids, scores, **kwargs):
        for row, reply in enumerate(input_ids[:, self.prompt_length:].tolist()):
            if row in self.lengths or row in self.ended:
                continue
            if reply and reply[-1] in self.end_ids:
                self.ended.add(row)
            elif self.stop_when(self.decode(reply)):
                self.lengths[row] = len(reply)
        return torch.tensor([row in self.lengths for row in range(len(input_ids))], device=input_ids.device)


class TokenSink(BaseStreamer):
    """Hands each row's new token to `on_token(row, token)` as generation makes it; a row is over after its end
    token (what follows is padding)."""

    def __init__(self, on_token: Callable[[int, int], None], end_ids: set[int]):
        self.on_token, self.end_ids = on_token, end_ids
        self.prompt_seen, self.ended = False, set()

    def put(self, value):
        if not self.prompt_seen:  # the first call hands over the prompts
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if row not in self.ended:
                self.on_token(row, token)
                if token in self.end_ids:
                    self.ended.add(row)

    def end(self):
        return


def sampling_arguments(sampling: Sampling | None) -> dict:
    """`generate`'s arguments for `sampling` (the global seed set here: the model runs on one thread)."""
    if sampling is None or sampling.greedy:
        return {"do_sample": False}
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    return {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "num_beams": 1}


class Predictor(BasePredictor):
    def __init__(self, model, processor, task, batch_size: int = 8, max_new_tokens: int | None = None,
                 mode: str | None = None, **generation):
        super().__init__(task, batch_size, max_new_tokens, mode)
        self.model, self.processor = model, processor
        self.end_ids = end_token_ids(model, processor.tokenizer)  # what ends a scored answer
        self.generation = {k: v for k, v in generation.items() if v is not None}
        if not self.generation.get("do_sample"):
            self.generation.pop("temperature", None)
            self.generation.pop("top_p", None)
        self.collator = VLMCollator(processor, with_labels=False)
        # One vision forward per image, whatever the number of prompts about it (per-class detection queries)
        self.features = FeatureCache.for_model(model, log=lambda *_: None, for_generation=True,
                                               memory_bytes=FEATURE_MEMORY_BYTES)

    @torch.inference_mode()
    def generate(self, images: list, messages: list[list[dict]], with_scores: bool = False,
                 max_new_tokens: int | None = None, stop_when: Callable[[str], bool] | None = None,
                 sampling: Sampling | None = None, on_token: Callable[[int, int], None] | None = None) -> dict:
        """Replies to one prompt per image (an image may be a list of images). `texts` are stripped. With
        `with_scores`: `tokens` (each reply's token ids up to and including its end token) and `log_probs`
        (each of those tokens' log-probability). `stop_when(reply so far)` ends a reply early (not with beams).
        `sampling` replaces the predictor's own settings; `on_token(row, token)` sees tokens as they come."""
        batch = self.collator.encode_prompts(images, messages)
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.features is not None and "pixel_values" in batch:
            batch = self.features.apply(self.model, {**batch, IMAGE_KEYS: pixel_unit_keys(batch["pixel_values"])})
        decode = lambda ids: self.processor.tokenizer.decode(ids, skip_special_tokens=True)
        stop = None
        if stop_when is not None and self.generation.get("num_beams", 1) == 1:
            stop = ReplyStop(decode, stop_when, batch["input_ids"].shape[1], self.end_ids)
        generation = self.generation if sampling is None else {**self.generation, **sampling_arguments(sampling)}
        streamer = TokenSink(on_token, self.end_ids) if on_token and generation.get("num_beams", 1) == 1 else None
        output = self.model.generate(**batch, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                     return_dict_in_generate=True, output_scores=with_scores, streamer=streamer,
                                     stopping_criteria=StoppingCriteriaList([stop] if stop else []), **generation)
        new_tokens = output.sequences[:, batch["input_ids"].shape[1]:]
        # Tokens after a row's end of sequence are padding; only the reply itself (end token included) counts.
        ended = torch.isin(new_tokens, torch.tensor(sorted(end_token_ids(self.model)), device=new_tokens.device))
        lengths = torch.where(ended.any(dim=1), ended.int().argmax(dim=1) + 1, new_tokens.shape[1]).tolist()
        lengths = [min(n, stop.lengths.get(row, n)) if stop else n for row, n in enumerate(lengths)]
        texts = [decode(new_tokens[row, :n].tolist()).strip() for row, n in enumerate(lengths)]
        if not with_scores:
            return {"texts": texts}
        steps = self.model.compute_transition_scores(output.sequences, output.scores,
                                                     getattr(output, "beam_indices", None), normalize_logits=True)
        steps = steps.float().cpu()
        return {"texts": texts, "tokens": [new_tokens[i, :n].tolist() for i, n in enumerate(lengths)],
                "log_probs": [steps[i, :n].tolist() for i, n in enumerate(lengths)]}

    def token_pieces(self, tokens: list[int]) -> list[str]:
        tokenizer = self.processor.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return token_pieces(backend, tokens)
        # a tokenizer without a `tokenizers` backend: the pieces as differences of decoded prefixes
        texts = [tokenizer.decode(tokens[: index + 1], skip_special_tokens=True) for index in range(len(tokens))]
        return [text[len(before):] for before, text in zip(["", *texts], texts)]

    def answer_tokens(self, messages: list[dict], target: str) -> list[int]:
        return self.processor.tokenizer(answer_suffix(self.processor, messages, target),
                                        add_special_tokens=False)["input_ids"]

    def score_answers(self, images: list, messages: list[list[dict]], answers: list[list[int]]) -> list[list[float]]:
        return score_answers(self.model, self.collator.encode_prompts, images, messages, answers).tolist()


class AdapterPredictor(Predictor):
    """A predictor over one named LoRA adapter of a model that holds several (peft), or over the base model with
    none active (`adapter` None): each call activates its adapter first. The model is called from one thread."""

    def __init__(self, model, processor, task, adapter: str | None, **kwargs):
        super().__init__(model, processor, task, **kwargs)
        self.adapter = adapter

    @contextmanager
    def _active(self):
        if self.adapter is None:  # the base as it was: no LoRA, and no region slots a run gave it
            with self.model.disable_adapter(), slots_hidden(self.model, self.processor):
                yield
        else:
            self.model.set_adapter(self.adapter)
            yield

    def generate(self, *args, **kwargs) -> dict:
        with self._active():
            return super().generate(*args, **kwargs)

    def score_answers(self, *args, **kwargs) -> list[list[float]]:
        with self._active():
            return super().score_answers(*args, **kwargs)
