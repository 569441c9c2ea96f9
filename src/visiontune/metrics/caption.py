"""COCO caption metrics, computed by pycocoevalcap itself (never re-implemented).

BLEU-1..4, METEOR, ROUGE-L, CIDEr, and SPICE when its Stanford CoreNLP jars are installed. Text is
tokenized by pycocoevalcap's PTB tokenizer (Java). Without Java, METEOR/SPICE are skipped, the PTB
tokenizer is replaced by a documented fallback, and the result says so.
"""

from __future__ import annotations

import re
import shutil
import string
from pathlib import Path


def java_available() -> bool:
    return shutil.which("java") is not None


def spice_available() -> bool:
    import pycocoevalcap.spice.spice as spice_module  # pycocoevalcap is a namespace package: no __file__

    lib = Path(spice_module.__file__).parent / "lib"
    return java_available() and any(lib.glob("stanford-corenlp-3.6.0*.jar"))


_PUNCTUATION = set(string.punctuation) | {"``", "''", "-lrb-", "-rrb-", "-lsb-", "-rsb-", "-lcb-", "-rcb-"}


def fallback_tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """Without Java: lower-case, split on non-word characters, drop punctuation (what PTB + pycocoevalcap's
    punctuation filter yield for plain English; contractions may differ)."""
    tokenized = {}
    for key, texts in captions.items():
        tokenized[key] = [" ".join(t for t in re.findall(r"\w+|[^\w\s]", text.lower()) if t not in _PUNCTUATION)
                          for text in texts]
    return tokenized


def caption_metrics(predictions: dict[str, str], references: dict[str, list[str]], use_spice: bool | None = None) -> dict:
    """Score one prediction per image against its references. Keys of both dicts are image keys."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    missing = sorted(set(references) - set(predictions))
    if missing:
        raise ValueError(f"{len(missing)} images have references but no prediction, e.g. {missing[:3]}")
    keys = sorted(references)
    if not keys:
        raise ValueError("no images to score")
    result: dict = {"images": len(keys), "skipped_metrics": {}}
    gts = {k: [{"caption": c} for c in references[k]] for k in keys}
    res = {k: [{"caption": predictions[k]}] for k in keys}
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        gts_tok, res_tok = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        result["tokenizer"] = "ptb"
    else:
        gts_tok = fallback_tokenize({k: [c["caption"] for c in v] for k, v in gts.items()})
        res_tok = fallback_tokenize({k: [c["caption"] for c in v] for k, v in res.items()})
        result["tokenizer"] = "fallback (no Java: PTB tokenizer unavailable)"
    scorers = [(Bleu(4), ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]), (Rouge(), ["ROUGE-L"]), (Cider(), ["CIDEr"])]
    if java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.insert(1, (Meteor(), ["METEOR"]))
    else:
        result["skipped_metrics"]["METEOR"] = "needs Java (install a JRE, e.g. apt-get install default-jre-headless)"
    want_spice = spice_available() if use_spice is None else use_spice
    if want_spice:
        from pycocoevalcap.spice.spice import Spice

        scorers.append((Spice(), ["SPICE"]))
    else:
        result["skipped_metrics"]["SPICE"] = ("needs Java and Stanford CoreNLP 3.6.0 jars in pycocoevalcap/spice/lib "
                                              "(python -m pycocoevalcap.spice.get_stanford_models, needs internet)")
    per_image: dict[str, dict] = {k: {} for k in keys}
    for scorer, names in scorers:
        score, scores = scorer.compute_score(gts_tok, res_tok)
        if isinstance(score, list):
            for name, value, values in zip(names, score, scores):
                result[name] = float(value)
                for key, v in zip(keys, values):
                    per_image[key][name] = float(v)
        else:
            result[names[0]] = float(score)
            for key, v in zip(keys, scores):
                per_image[key][names[0]] = float(v) if not isinstance(v, dict) else float(v["All"]["f"])
    result["per_image"] = per_image
    return result
