"""A chat reply as its tokens arrive (its limit, stop strings, what a stream may show), and the torch-free
runtime's token choice (greedy, or sampled by temperature / top_p / seed)."""

from __future__ import annotations

import numpy as np

from visiontune.inference.protocol import Sampling
from visiontune.runtime.vlm import choose_tokens
from visiontune.serve.replies import Reply

WORDS = {1: " The", 2: " cat", 3: " sat", 4: " on", 5: " the", 6: " mat", 7: "."}
END = 0


def _reply(limit: int = 20, stops=None):
    shown = []
    reply = Reply(lambda tokens: [WORDS[t] for t in tokens], {END}, limit, stops, shown.append)
    return reply, shown


def test_a_reply_streams_what_is_decided_and_ends_at_its_end_token():
    reply, shown = _reply()
    for token in (1, 2, 3, END, 4):
        reply.add(token)
    assert shown == ["The", " cat", " sat"]
    assert reply.result() == {"text": "The cat sat", "completion_tokens": 4, "finish_reason": "stop"}


def test_a_stop_string_cuts_the_reply_and_its_start_is_never_shown_early():
    reply, shown = _reply(stops=[" on the"])
    for token in (1, 2, 3, 4):
        reply.add(token)
    assert "".join(shown) == "The cat sat"  # " on" may begin the stop string: held back
    reply.add(5)
    assert reply.result() == {"text": "The cat sat", "completion_tokens": 5, "finish_reason": "stop"}
    reply.add(6)  # the batch goes on; this reply does not
    assert "".join(shown) == "The cat sat" and reply.result()["completion_tokens"] == 5
    held, shown = _reply(stops=[" on the"])
    for token in (1, 2, 3, 4, 6):
        held.add(token)
    assert "".join(shown) == "The cat sat on mat"  # " on mat" is no stop: shown once decided


def test_a_reply_stops_at_its_own_limit():
    reply, shown = _reply(limit=2)
    for token in (1, 2, 3):
        reply.add(token)
    assert reply.result() == {"text": "The cat", "completion_tokens": 2, "finish_reason": "length"}
    assert "".join(shown) == "The cat"


def test_the_runtime_samples_by_seed_within_top_p_and_is_greedy_at_temperature_zero():
    logp = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 400))
    draw = lambda sampling: choose_tokens(logp, sampling, np.random.default_rng(sampling.seed))
    assert (draw(Sampling()) == 0).all()
    warm = draw(Sampling(temperature=1.0, seed=3))
    assert (warm == draw(Sampling(temperature=1.0, seed=3))).all() and set(warm) == {0, 1, 2, 3}
    assert set(draw(Sampling(temperature=1.0, top_p=0.7, seed=3))) == {0, 1}  # 0.5 + 0.3 hold 0.7
