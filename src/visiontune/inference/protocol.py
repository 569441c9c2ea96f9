"""The predictor contract: what tasks may ask of a loaded model, whatever runs it.

`Predictor` (PyTorch) and `ExportPredictor` (the torch-free runtimes: ONNX, GGUF) implement it; tasks use
nothing else, so every task predicts, evaluates and serves from an export as it does from a PyTorch model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable


@dataclass(frozen=True)
class Sampling:
    """How a reply's tokens are drawn: greedily (temperature 0, the default), or sampled at `temperature` from
    the smallest set of tokens holding `top_p` of the probability, reproducibly for one `seed`."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@runtime_checkable
class PredictorProtocol(Protocol):
    task: Any
    batch_size: int
    max_new_tokens: int
    mode: str  # one of the task's prediction_modes
    cache: dict  # what a task keeps between batches (e.g. its class answers' tokens)
    end_ids: set[int]  # tokens that end a reply

    def generate(self, images: list, messages: list[list[dict]], with_scores: bool = False,
                 max_new_tokens: int | None = None, stop_when: Callable[[str], bool] | None = None,
                 sampling: Sampling | None = None, on_token: Callable[[int, int], None] | None = None) -> dict:
        """Replies to one prompt per image: `texts` (stripped); with `with_scores`, `tokens` (each reply's ids up
        to and including its end token) and `log_probs` (each of those tokens' log-probability). A reply ends
        early once `stop_when(its text so far)` holds. `sampling`: greedy when None. `on_token(row, token id)`
        is called as each row's tokens are generated, up to and including its end token."""

    def generate_texts(self, images: list, with_log_probs: bool = False):
        """Replies to the task's own prompt (and, with `with_log_probs`, each reply's summed log-probability)."""

    def token_pieces(self, tokens: list[int]) -> list[str]:
        """Each token's share of the decoded reply (special tokens and incomplete bytes: ""); joined, the reply."""

    def answer_tokens(self, messages: list[dict], target: str) -> list[int]:
        """The token ids the chat template puts after the generation prompt when `target` is the answer."""

    def score_answers(self, images: list, messages: list[list[dict]], answers: list[list[int]]) -> list[list[float]]:
        """(images, answers): each answer's summed token log-probability after each image's prompt."""
