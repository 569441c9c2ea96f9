"""The answers' token trie: every distinct answer prefix once, scored in one pass as a tree.

Answers that start alike ("Sandal", "Sneaker" both begin with the same token) share the nodes of their
common prefix. A node is fed as an input token; it sees the prompt and its own ancestors only (the
attention mask), at the position it would have in its answer, so one forward over all nodes gives exactly
the log-probabilities that running each answer after the prompt separately would give.
"""

from __future__ import annotations

import torch


class AnswerTrie:
    def __init__(self, answers: list[list[int]]):
        self.answers = answers
        self.tokens: list[int] = []  # each node's input token
        self.parents: list[int] = []  # each node's parent node; -1 when it follows the prompt directly
        self.depths: list[int] = []  # 0 for a node right after the prompt
        self._node_of: dict[tuple[int, ...], int] = {}
        for answer in answers:
            # An answer's last token is predicted but never fed, so it needs no node.
            for length in range(1, len(answer)):
                prefix = tuple(answer[:length])
                if prefix not in self._node_of:
                    self._node_of[prefix] = len(self.tokens)
                    self.tokens.append(answer[length - 1])
                    self.parents.append(self._node_of.get(prefix[:-1], -1))
                    self.depths.append(length - 1)

    def ancestry(self, device=None) -> torch.Tensor:
        """(nodes, nodes) bool: node i may attend to node j (j is i or one of its ancestors)."""
        visible = torch.eye(len(self.tokens), dtype=torch.bool)
        for node, parent in enumerate(self.parents):  # parents come before their children
            if parent >= 0:
                visible[node] |= visible[parent]
        return visible.to(device)

    def paths(self, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where each answer token is predicted: (logit row, token, valid), each (answers, longest answer).
        Logit row 0 is the prompt's last position, row 1 + n is node n."""
        width = max(len(a) for a in self.answers)
        where = torch.zeros((len(self.answers), width), dtype=torch.long)
        tokens = torch.zeros_like(where)
        valid = torch.zeros(where.shape, dtype=torch.float32)
        for row, answer in enumerate(self.answers):
            for k, token in enumerate(answer):
                where[row, k] = 0 if k == 0 else 1 + self._node_of[tuple(answer[:k])]
                tokens[row, k], valid[row, k] = token, 1.0
        return where.to(device), tokens.to(device), valid.to(device)
