"""Tests for the synthetic data, the demo model builder and the SKU-match classifier."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from streamapp.demo.model import build_demo_model
from streamapp.demo.synthetic import CATEGORY_KEYS, generate_comments
from streamapp.serving.formats.huggingface import ModelLoadError, SkuMatchClassifier

REVIEWS = [
    "红富士苹果脆甜多汁，物流很快，好评！",
    "配送员态度很好，包装很结实。",
    "上次买的可乐气很足，这次的洗衣液香味很淡雅，500ml的小瓶装也不错",
    "",
]
SKUS = [
    "山东烟台红富士苹果 5斤装",
    "海南香蕉 3斤",
    "蓝月亮深层洁净洗衣液 3kg",
    "可口可乐 330ml*24罐",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model small enough to train in a couple of seconds; only its plumbing is tested."""
    out = tmp_path_factory.mktemp("models") / "tiny"
    build_demo_model(
        out, train_size=600, test_size=50, epochs=1, hidden_size=32, num_layers=1, log=None
    )
    return out


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model that a test may break."""
    return Path(shutil.copytree(tiny_model, tmp_path / "copy"))


def _save_tiny_bert(model_dir: Path, tokenizer_dir: Path, model: torch.nn.Module) -> Path:
    model.save_pretrained(model_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True).save_pretrained(model_dir)
    return model_dir


def _tiny_config(tokenizer_dir: Path, **overrides: object) -> BertConfig:
    vocab_size = len(AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        **overrides,
    )


def _reference_logits(model_dir: Path, reviews: list[str], skus: list[str]) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = BertForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    batch = tokenizer(
        reviews, skus, max_length=64, truncation="longest_first", padding="max_length",
        return_tensors="pt",
    )
    with torch.no_grad():
        return model(**batch).logits


# --- synthetic data ---------------------------------------------------------------------------


def test_generate_comments_is_deterministic_and_complete() -> None:
    first = list(generate_comments(300, seed=7))
    assert first == list(generate_comments(300, seed=7))
    assert first != list(generate_comments(300, seed=8))
    expected_keys = {"dataType", "baseSkuName", "reviewBody", "label", *CATEGORY_KEYS}
    for row in first:
        assert set(row) == expected_keys
        assert row["dataType"] == "COMMENT_LONG_TEXT"
        assert isinstance(row["reviewBody"], str) and row["reviewBody"].strip()
        assert row["baseSkuName"] and row["categoryFirstName"] and row["categoryThirdName"]
        assert row["label"] in (0, 1)
    assert {row["label"] for row in first} == {0, 1}
    assert {row["categoryFirstName"] for row in first} == {
        "生鲜", "酒水饮料", "休闲食品", "乳品烘焙", "个护清洁", "粮油调味"
    }
    assert max(len(str(row["reviewBody"])) for row in first) > 200


# --- loading and predicting ---------------------------------------------------------------------


def test_predictions_are_probabilities_matching_the_model(tiny_model: Path) -> None:
    classifier = SkuMatchClassifier.load(tiny_model, device="cpu")
    scores = classifier.predict(REVIEWS, SKUS)
    assert len(scores) == len(REVIEWS)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    # Padding to the longest pair must give what padding to max_length gives.
    expected = torch.softmax(_reference_logits(tiny_model, REVIEWS, SKUS), dim=-1)[:, 1]
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)


def test_batch_single_and_order_give_same_scores(tiny_model: Path) -> None:
    classifier = SkuMatchClassifier.load(tiny_model, device="cpu")
    batch = classifier.predict(REVIEWS, SKUS)
    singles = [classifier.predict([r], [s])[0] for r, s in zip(REVIEWS, SKUS, strict=True)]
    assert singles == pytest.approx(batch, abs=1e-5)
    reversed_scores = classifier.predict(REVIEWS[::-1], SKUS[::-1])
    assert reversed_scores[::-1] == pytest.approx(batch, abs=1e-5)


def test_packed_sub_batches_score_as_one_batch_in_input_order_with_less_padding(
        tiny_model: Path) -> None:
    classifier = SkuMatchClassifier.load(tiny_model, device="cpu", max_tokens=128)
    reviews = [("好吃" * n) + "苹果" for n in (60, 1, 30, 2, 45, 3, 10, 50)]
    skus = [SKUS[i % len(SKUS)] for i in range(len(reviews))]
    whole = classifier.predict(reviews, skus, token_budget=None)
    budget = 256
    packed = classifier.pack(reviews, skus, budget)
    assert len(packed.parts) > 1
    for part in packed.parts:
        rows, width = part["input_ids"].shape
        assert rows == 1 or rows * width <= budget
    assert sorted(packed.order) == list(range(len(reviews)))
    one_batch = classifier.tokenize(reviews, skus)["attention_mask"]
    assert packed.tokens == int(one_batch.sum())
    assert packed.padded_tokens < one_batch.numel()  # less padding computed
    assert classifier.packed_probabilities(packed).tolist() == pytest.approx(whole, abs=1e-5)
    assert classifier.predict(reviews, skus, token_budget=budget) == pytest.approx(whole,
                                                                                 abs=1e-5)
    # A budget below one pair still scores it, alone.
    assert classifier.predict(reviews, skus, token_budget=8) == pytest.approx(whole, abs=1e-5)


def test_packed_sub_batches_hold_the_tokenizers_own_encoding(tiny_model: Path) -> None:
    """pack() encodes with the Rust tokenizer and pads with numpy: the same ids, type ids and
    mask as the transformers call, truncated as the seed does, each group to its longest."""
    classifier = SkuMatchClassifier.load(tiny_model, device="cpu", max_tokens=32)
    reviews = [("好吃" * n) + "苹果" for n in (60, 1, 30, 2, 45, 3, 10)] + ["500ml 牛奶 OK!"]
    skus = [SKUS[i % len(SKUS)] for i in range(len(reviews))]
    packed = classifier.pack(reviews, skus, 100)
    assert len(packed.parts) > 1
    start = 0
    for part in packed.parts:
        rows = packed.order[start:start + part["input_ids"].shape[0]]
        start += len(rows)
        expected = classifier.tokenize([reviews[i] for i in rows], [skus[i] for i in rows])
        assert set(part.keys()) == set(expected.keys())
        for name in expected:
            assert torch.equal(part[name], expected[name]), name
    assert start == len(reviews)


def test_empty_and_mismatched_input(tiny_model: Path) -> None:
    classifier = SkuMatchClassifier.load(tiny_model, device="cpu")
    assert classifier.predict([], []) == []
    with pytest.raises(ValueError):
        classifier.predict(["a"], [])


def test_long_review_is_truncated(tiny_model: Path) -> None:
    classifier = SkuMatchClassifier.load(tiny_model, device="cpu", max_tokens=32, num_threads=1)
    assert classifier.max_tokens == 32
    [score] = classifier.predict(["苹果很甜，" * 200], [SKUS[0]])
    assert 0.0 <= score <= 1.0


def test_info_fields(tiny_model: Path) -> None:
    before = time.time()
    classifier = SkuMatchClassifier.load(tiny_model, device="cpu")
    info = classifier.info
    assert info.name == "streamapp-demo-sku-match"
    assert info.version == "demo-1"
    assert info.path == str(tiny_model)
    assert (info.device, info.dtype) == ("cpu", "float32")
    assert before <= info.loaded_at <= time.time()
    assert classifier.max_tokens == 64


def test_ascii_words_split_into_known_pieces(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    assert tokenizer.tokenize("500ML") == ["5", "##0", "##0", "##m", "##l"]
    assert tokenizer.tokenize("苹果app") == ["苹", "果", "a", "##p", "##p"]


def test_single_logit_model_uses_sigmoid(tiny_model: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(_tiny_config(tiny_model, num_labels=1))
    model_dir = _save_tiny_bert(tmp_path / "sigmoid-model", tiny_model, model)
    classifier = SkuMatchClassifier.load(model_dir, device="cpu")
    scores = classifier.predict(REVIEWS, SKUS)
    expected = torch.sigmoid(_reference_logits(model_dir, REVIEWS, SKUS)[:, 0])
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    # Without streamapp_* config attributes: directory name and weights hash.
    weights = (model_dir / "model.safetensors").read_bytes()
    assert classifier.info.name == "sigmoid-model"
    assert classifier.info.version == hashlib.sha256(weights).hexdigest()[:12]


# --- load errors --------------------------------------------------------------------------------


def _assert_load_error(path: Path, fragment: str, **kwargs: object) -> None:
    with pytest.raises(ModelLoadError) as caught:
        SkuMatchClassifier.load(path, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert str(path) in message
    assert fragment in message


def test_missing_directory(tmp_path: Path) -> None:
    _assert_load_error(tmp_path / "nope", "does not exist")


def test_missing_config(model_copy: Path) -> None:
    (model_copy / "config.json").unlink()
    _assert_load_error(model_copy, "config.json")


def test_missing_weights(model_copy: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    _assert_load_error(model_copy, "weights")


def test_corrupted_weights(model_copy: Path) -> None:
    (model_copy / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    _assert_load_error(model_copy, "weights")


def test_missing_tokenizer(model_copy: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (model_copy / name).unlink(missing_ok=True)
    _assert_load_error(model_copy, "tokenizer")


def test_not_a_sequence_classifier(tiny_model: Path, tmp_path: Path) -> None:
    model_dir = _save_tiny_bert(tmp_path / "base", tiny_model, BertModel(_tiny_config(tiny_model)))
    _assert_load_error(model_dir, "not a sequence classifier")


def test_unsupported_num_labels(tiny_model: Path, tmp_path: Path) -> None:
    model = BertForSequenceClassification(_tiny_config(tiny_model, num_labels=3))
    model_dir = _save_tiny_bert(tmp_path / "three", tiny_model, model)
    _assert_load_error(model_dir, "num_labels")


def test_bad_device_and_max_tokens(tiny_model: Path) -> None:
    _assert_load_error(tiny_model, "device", device="tpu")
    _assert_load_error(tiny_model, "max_tokens", max_tokens=512)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(tiny_model: Path) -> None:
    _assert_load_error(tiny_model, "CUDA is not available", device="cuda")
    _assert_load_error(tiny_model, "CUDA is not available", device="cuda:1")


# --- demo model quality -------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_model_learns_sku_match(tmp_path: Path) -> None:
    report = build_demo_model(tmp_path / "demo", train_size=5000, test_size=400, epochs=2, log=None)
    assert report.accuracy >= 0.8
    assert (report.train_size, report.test_size) == (5000, 400)
    assert (tmp_path / "demo" / "config.json").is_file()
    # Only the finished model is left beside it: no temporary build directory.
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]
