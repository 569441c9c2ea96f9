"""One chat reply as its tokens arrive: its own `max_tokens` and `stop` strings in a batch that generates to the
longest limit, the text it may show so far (`delta`s for a stream), and why it finished.

A stream never shows what a stop string might still cut: the tail that could begin one is held back until the
next token decides, and bytes of an unfinished character wait for the rest.
"""

from __future__ import annotations

from collections.abc import Callable


class Reply:
    def __init__(self, pieces: Callable[[list[int]], list[str]], end_ids: set[int], limit: int,
                 stops: list[str] | None = None, sink: Callable[[str], None] | None = None):
        """`pieces(tokens)`: each token's share of the decoded text (the predictor's `token_pieces`); `sink`
        receives each new piece of visible text; joined, the pieces are the reply's final text."""
        self.pieces, self.end_ids, self.limit = pieces, end_ids, limit
        self.stops, self.sink = [s for s in stops or [] if s], sink
        self.tokens: list[int] = []
        self.generated = 0  # tokens this reply took, its end token included
        self.text, self.shown = "", 0
        self.finish_reason: str | None = None

    def add(self, token: int) -> None:
        if self.finish_reason is not None:
            return
        self.generated += 1
        if token in self.end_ids:
            self._finish("stop")
            return
        self.tokens.append(token)
        self.text = "".join(self.pieces(self.tokens))
        cut = min((index for index in (self.text.find(stop) for stop in self.stops) if index >= 0), default=None)
        if cut is not None:
            self.text = self.text[:cut]
            self._finish("stop")
        elif len(self.tokens) >= self.limit:
            self._finish("length")
        else:
            self._show(len(self.text.rstrip()) - self._undecided_tail())

    def _undecided_tail(self) -> int:
        """Characters at the end that may still become the start of a stop string."""
        return max((size for stop in self.stops for size in range(len(stop) - 1, 0, -1)
                    if self.text.endswith(stop[:size])), default=0)

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        self._show(len(self.text.rstrip()))

    def _show(self, upto: int) -> None:
        start = self.shown or len(self.text) - len(self.text.lstrip())  # replies are stripped: so is the stream
        if upto <= start:
            return
        self.shown = upto
        if self.sink is not None:
            self.sink(self.text[start:upto])

    def result(self) -> dict:
        """The reply as the API gives it; a reply the batch ended before it finished stopped at its limit."""
        return {"text": self.text.strip(), "completion_tokens": self.generated,
                "finish_reason": self.finish_reason or "length"}
