"""From a free-text answer to one of the classes, or to none (counted as unmapped).

The rule, in order (all on the *answer section*: the text after the last "Answer:" if there is one,
else the whole reply; compared after lower-casing and turning markdown and punctuation into spaces):
1. exact: the answer section is a class name;
2. mention: class names that occur in it as whole words; the earliest wins, and of names starting at
   the same place the longest ("golden retriever" over "retriever");
3. close: the closest class name by difflib's similarity ratio if it is at least 0.8 (typos, plurals);
4. otherwise unmapped (None).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

ANSWER_MARKER = re.compile(r"answer\s*[:：]", re.IGNORECASE)
CLOSE_MATCH_CUTOFF = 0.8


@dataclass(frozen=True)
class ParsedAnswer:
    label: str | None
    rule: str  # exact | mention | close | unmapped


def normalise(text: str) -> str:
    text = re.sub(r"[^\w\s]|_", " ", text.lower())
    return " ".join(text.split())


def answer_section(text: str) -> str:
    """What follows the last "Answer:" marker (up to the end of that line's content), else the whole text."""
    markers = list(ANSWER_MARKER.finditer(text))
    if not markers:
        return text
    rest = text[markers[-1].end():].strip()
    return rest.splitlines()[0] if rest else ""


def parse_answer(text: str, classes: list[str]) -> ParsedAnswer:
    section = normalise(answer_section(text))
    by_name = {normalise(name): name for name in classes}
    if section in by_name:
        return ParsedAnswer(by_name[section], "exact")
    mentions = []
    for key, name in by_name.items():
        if not key:
            continue
        match = re.search(rf"(?<!\w){re.escape(key)}(?!\w)", section)
        if match:
            mentions.append((match.start(), -len(key), name))
    if mentions:
        return ParsedAnswer(min(mentions)[2], "mention")
    close = difflib.get_close_matches(section, list(by_name), n=1, cutoff=CLOSE_MATCH_CUTOFF)
    if close:
        return ParsedAnswer(by_name[close[0]], "close")
    return ParsedAnswer(None, "unmapped")
