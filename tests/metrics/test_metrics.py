"""Our caption metrics must equal pycocoevalcap computed directly on the same inputs."""

import pytest

from visiontune.metrics.caption import caption_metrics, fallback_tokenize, java_available

PREDICTIONS = {"1": "A man riding a wave on top of a surfboard.", "2": "a red circle on a white background",
               "3": "Two dogs playing in the snow!"}
REFERENCES = {"1": ["A surfer rides a large wave.", "a man on a surfboard riding a wave"],
              "2": ["a red circle on a white background", "red disc, white backdrop"],
              "3": ["two dogs play in snow", "Dogs running through the snow.", "a pair of dogs in the snow"]}


@pytest.mark.skipif(not java_available(), reason="PTB tokenizer and METEOR need Java")
def test_equals_pycocoevalcap_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in PREDICTIONS.items()})
    direct = {}
    bleu, _ = Bleu(4).compute_score(gts, res)
    direct.update({f"BLEU-{i + 1}": b for i, b in enumerate(bleu)})
    direct["METEOR"], _ = Meteor().compute_score(gts, res)
    direct["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    direct["CIDEr"], _ = Cider().compute_score(gts, res)
    ours = caption_metrics(PREDICTIONS, REFERENCES, use_spice=False)
    for name, value in direct.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    assert ours["tokenizer"] == "ptb"
    assert 0 < ours["CIDEr"] and ours["per_image"]["2"]["BLEU-1"] == pytest.approx(1.0)


def test_without_java_says_what_was_skipped(monkeypatch):
    import visiontune.metrics.caption as module

    monkeypatch.setattr(module, "java_available", lambda: False)
    result = caption_metrics(PREDICTIONS, REFERENCES)
    assert "METEOR" not in result and "METEOR" in result["skipped_metrics"]
    assert result["tokenizer"].startswith("fallback") and result["CIDEr"] > 0


def test_fallback_tokenizer_strips_punctuation_and_case():
    assert fallback_tokenize({"a": ["Two dogs, playing!"]}) == {"a": ["two dogs playing"]}


def test_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="no prediction"):
        caption_metrics({"1": "x"}, {"1": ["x"], "2": ["y"]})
