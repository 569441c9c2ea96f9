"""Classify task: prompts, the answer parser, metrics against scikit-learn, score mode against one-class-at-a-time."""

import numpy as np
import pytest
import torch

from visiontune.metrics.classification import classification_metrics, expected_calibration_error
from visiontune.tasks import get_task
from visiontune.tasks.classify.answer_parser import parse_answer

CLASSES = ["cat", "dog", "golden retriever", "retriever", "bird"]


@pytest.mark.parametrize("text,label,rule", [
    ("cat", "cat", "exact"),
    ("Answer: Cat.", "cat", "exact"),
    ("CAT", "cat", "exact"),
    ("  dog\n", "dog", "exact"),
    ("it is a **cat**", "cat", "mention"),
    ("This looks like a golden retriever to me.", "golden retriever", "mention"),
    ("a retriever, not sure which", "retriever", "mention"),
    ("Reasoning: pointy ears like a cat, but it barks like a dog.\nAnswer: dog", "dog", "exact"),
    ("Reasoning: it could be a dog or a bird.\nAnswer: the bird", "bird", "mention"),
    ("Reasoning: no idea, maybe a cat\nAnswer: zebra", None, "unmapped"),
    ("cats", "cat", "close"),
    ("retreiver", "retriever", "close"),
    ("birds!", "bird", "close"),
    ("asdf qwerty", None, "unmapped"),
    ("", None, "unmapped"),
])
def test_parser_table(text, label, rule):
    parsed = parse_answer(text, CLASSES)
    assert (parsed.label, parsed.rule) == (label, rule)


def test_prompts_fill_classes_and_descriptions():
    task = get_task("classify", classes=["ael", "cli"], class_descriptions={"ael": "aeolian ridges"},
                    system_prompt="You are an expert Martian geologist. Classes: {classes}.\n{descriptions}",
                    prompt="Classify the terrain. Answer with one of: {classes}")
    system, user = task.messages()
    assert system["content"][0]["text"] == "You are an expert Martian geologist. Classes: ael, cli.\n- ael: aeolian ridges"
    assert user["content"][1]["text"] == "Classify the terrain. Answer with one of: ael, cli"
    assert get_task("classify", classes=["a", "b"], reasoning=True).target_text("a", "round") == \
        "Reasoning: round\nAnswer: a"
    assert get_task("classify", classes=["a", "b"]).target_text("a", "round") == "a"
    with pytest.raises(ValueError, match="class names"):
        get_task("classify")


def test_metrics_equal_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, top_k_accuracy_score

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d"]
    truth = list(rng.choice(classes, 60))
    scores = rng.dirichlet(np.ones(4), 60)
    predicted = [classes[i] for i in scores.argmax(1)]
    predicted[3] = None  # an unmapped answer is simply wrong
    metrics = classification_metrics(truth, predicted, classes, scores.tolist())
    shown = [p or "<unmapped>" for p in predicted]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, shown), abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(f1_score(truth, shown, labels=classes, average="macro"), abs=1e-12)
    assert metrics["weighted_f1"] == pytest.approx(f1_score(truth, shown, labels=classes, average="weighted"),
                                                   abs=1e-12)
    precision, recall, _, support = precision_recall_fscore_support(truth, shown, labels=classes, zero_division=0)
    assert [metrics["per_class"][c]["recall"] for c in classes] == pytest.approx(list(recall), abs=1e-12)
    assert [metrics["per_class"][c]["precision"] for c in classes] == pytest.approx(list(precision), abs=1e-12)
    assert [metrics["per_class"][c]["support"] for c in classes] == list(support)
    assert metrics["top2_accuracy"] == pytest.approx(top_k_accuracy_score(truth, scores, k=2, labels=classes))
    assert metrics["unmapped_rate"] == pytest.approx(1 / 60)


def test_ece_by_hand():
    # two bins used: (0.2, 0.267] holds 0.25 x2 (one right); (0.933, 1] holds 0.95 x2 (both right)
    ece, table = expected_calibration_error([0.25, 0.25, 0.95, 0.95], [1, 0, 1, 1])
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.25) + 0.5 * abs(1.0 - 0.95))
    assert [entry["count"] for entry in table] == [2, 2]
    assert expected_calibration_error([1.0, 1.0], [1, 1])[0] == 0.0


def _independent_log_likelihood(model, processor, task, image, target, eos_ids):
    """log p(answer) with the whole sequence in one ordinary forward pass, up to and including end-of-turn."""
    from visiontune.models.prompt_encoding import IGNORE_INDEX, VLMCollator

    batch = VLMCollator(processor)([{"image": image, "messages": task.messages(), "target": target, "where": "t"}])
    labels = batch.pop("labels")[0]
    with torch.no_grad():
        logits = model(**batch).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1).gather(-1, labels[1:, None].clamp(min=0))[:, 0]
    positions = (labels[1:] != IGNORE_INDEX).nonzero()[:, 0].tolist()
    total = 0.0
    for position in positions:
        total += float(logp[position])
        if int(labels[1 + position]) in eos_ids:
            break
    return total


@pytest.mark.parametrize("family,reasoning", [("smolvlm", False), ("smolvlm", True), ("llava", False)])
def test_score_mode_matches_one_class_at_a_time(tiny_models, shape_classes, family, reasoning):
    """The answer trie in one pass equals scoring each answer in its own plain forward pass."""
    from visiontune.data.images import load_image
    from visiontune.inference.predictor import Predictor
    from visiontune.models.vlm import load_for_inference
    from visiontune.tasks.classify.ranking import ClassScorer

    model, processor, _ = load_for_inference(tiny_models[family], log=lambda *_: None)
    # names that share first tokens share trie nodes
    classes = ["circle", "circles", "circle big", "square", "triangle"]
    task = get_task("classify", classes=classes, reasoning=reasoning, top_k=3)
    scorer = ClassScorer(Predictor(model, processor, task), task)
    image = load_image(next((shape_classes / "circle").glob("*.png")))
    rationale = "it is round and red" if reasoning else None
    scores = torch.tensor(scorer.scores([image], rationale)[0])
    expected = [_independent_log_likelihood(model, processor, task, image, task.target_text(name, rationale),
                                            scorer.eos) for name in classes]
    assert scores.tolist() == pytest.approx(expected, abs=2e-4)
    assert scores.argsort().tolist() == np.argsort(expected).tolist()
    result = scorer.results([image], [f"Reasoning: {rationale}\nAnswer: circle" if reasoning else None])[0]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6) and len(result["top_k"]) == 3
    assert result["top_k"][0]["label"] == result["label"] == classes[int(np.argmax(expected))]


def test_batched_scoring_equals_one_image_at_a_time(tiny_models, shape_classes):
    """Images of different sizes get different image-token counts, so the batch is left-padded."""
    from visiontune.data.images import load_image
    from visiontune.inference import answer_scoring
    from visiontune.inference.predictor import Predictor
    from visiontune.models.vlm import load_for_inference
    from visiontune.tasks.classify.ranking import ClassScorer

    model, processor, _ = load_for_inference(tiny_models["smolvlm"], log=lambda *_: None)
    task = get_task("classify", classes=["circle", "circles", "square", "triangle"])
    predictor = Predictor(model, processor, task)
    scorer = ClassScorer(predictor, task)
    images = [load_image(p) for p in sorted(shape_classes.rglob("*.png"))[:3]]
    images[1] = images[1].resize((200, 96))
    lengths = {len(predictor.collator.encode_prompts([im], [task.messages()])["input_ids"][0]) for im in images}
    assert len(lengths) > 1  # the batch really is padded
    one_by_one = torch.tensor([scorer.scores([im])[0] for im in images])
    original = answer_scoring.POSITIONS_PER_PASS
    answer_scoring.POSITIONS_PER_PASS = 5  # one image per pass: several passes
    try:
        batched = torch.tensor(scorer.scores(images))
    finally:
        answer_scoring.POSITIONS_PER_PASS = original
    assert torch.allclose(batched, one_by_one, atol=2e-4), (batched, one_by_one)


def test_answer_trie_follows_qwen2_vl_multimodal_positions():
    """Qwen2-VL's M-RoPE positions run ahead of the token count after an image, differently per left-padded
    row; the trie's nodes must continue them. Built by hand: its processor needs torchvision."""
    from PIL import Image
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    from visiontune.inference.answer_scoring import score_answers

    torch.manual_seed(0)
    image_token, start, end, pad = 95, 96, 97, 0
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=100, pad_token_id=pad, eos_token_id=2, bos_token_id=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    config = Qwen2VLConfig(vision_config=dict(depth=1, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=64,
                                              patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
                           text_config=text, image_token_id=image_token, video_token_id=98,
                           vision_start_token_id=start, vision_end_token_id=end)
    model = Qwen2VLForConditionalGeneration(config).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)) for size in [(56, 56, 3), (84, 112, 3)]]
    pixels = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)(images=images, return_tensors="pt")
    grid = pixels["image_grid_thw"]
    counts = (grid.prod(-1) // 4).tolist()  # image tokens per image (2x2 merge)
    prompts = [[5, 6, start] + [image_token] * n + [end, 7, 8, 9] for n in counts]
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    batch = {"input_ids": ids, "attention_mask": (torch.arange(width) >= width - torch.tensor([[len(p)] for p in prompts])).long(),
             "mm_token_type_ids": (ids == image_token).long(), **pixels}
    answers = [[10, 11, 2], [10, 12, 13, 2], [20, 2], [10, 11, 14, 2]]
    with torch.inference_mode():
        scores = score_answers(model, lambda *_: dict(batch), images, [[], []], answers)
        expected = torch.zeros_like(scores)
        first_pixels = counts[0] * 4
        for row, prompt in enumerate(prompts):
            rows_pixels = pixels["pixel_values"][:first_pixels] if row == 0 else pixels["pixel_values"][first_pixels:]
            for column, answer in enumerate(answers):
                full = torch.tensor([prompt + answer])
                logits = model(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=rows_pixels,
                               mm_token_type_ids=(full == image_token).long(), image_grid_thw=grid[row:row + 1]).logits
                logp = torch.log_softmax(logits[0].float(), -1)
                expected[row, column] = sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(answer))
    assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)


def test_temperature_scaling_calibrates_an_overconfident_model():
    from visiontune.tasks.classify.calibration import fit_temperature

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 2000)
    # a model right 70% of the time that is always ~certain: scores far too peaked
    chosen = np.where(rng.random(2000) < 0.7, truth, rng.integers(0, 4, 2000))
    scores = rng.normal(0, 1, (2000, 4))
    scores[np.arange(2000), chosen] += 8.0
    scores = torch.tensor(scores)
    temperature = fit_temperature(scores, torch.tensor(truth))
    assert temperature > 2.0

    def ece(t):
        probabilities = torch.softmax(scores / t, 1)
        return expected_calibration_error(probabilities.max(1).values, probabilities.argmax(1).numpy() == truth)[0]

    assert ece(temperature) < 0.06 and ece(1.0) > 0.2
    assert torch.equal(torch.softmax(scores / temperature, 1).argmax(1), scores.argmax(1))  # ranking unchanged


def test_top_k_with_classes_in_model_order_not_sorted():
    """Fashion-MNIST's class order is not alphabetical; sklearn's top-k needs sorted labels (regression)."""
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(1)
    classes = ["T-shirt/top", "Trouser", "Bag", "Ankle boot"]
    truth = list(rng.choice(classes, 40))
    scores = rng.dirichlet(np.ones(4), 40)
    metrics = classification_metrics(truth, [classes[i] for i in scores.argmax(1)], classes, scores.tolist())
    expected = top_k_accuracy_score([classes.index(t) for t in truth], scores, k=2, labels=[0, 1, 2, 3])
    assert metrics["top2_accuracy"] == pytest.approx(expected)
    assert metrics["top3_accuracy"] >= metrics["top2_accuracy"] >= metrics["accuracy"]
