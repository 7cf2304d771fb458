"""Build a small demo SKU-match model from synthetic data, with no model hub involved.

The model is a tiny BERT cross-encoder with a character-level vocabulary, trained from scratch
on `streamapp.demo.synthetic` reviews in about a minute on two CPU cores. Its first layer starts as
a character matcher between review and SKU name (see `_init_char_matching`), so one epoch over
freshly generated SKUs teaches it the pairwise signal rather than a list of product words. It is
for demos, tests and load tests; it is not a production model.
"""

from __future__ import annotations

import contextlib
import math
import string
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from streamapp.demo.building import DemoModelReport, demo_build
from streamapp.serving.formats.huggingface import SkuMatchClassifier

MODEL_NAME = "streamapp-demo-sku-match"
MODEL_VERSION = "demo-1"
MAX_TOKENS = 64
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CJK_PUNCTUATION = "，。！？、；：“”‘’（）《》【】…—～·「」『』〈〉〔〕．"
# About a minute of training on two cores; with fewer rows, more epochs make up the difference.
TRAIN_EXAMPLES = 24_000




def _is_cjk(char: str) -> bool:
    # The ranges BERT's basic tokenizer splits into single-character tokens.
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0xF900 <= code <= 0xFAFF
    )


def build_vocab(texts: Sequence[str]) -> list[str]:
    """Character vocabulary: specials, corpus characters, ASCII, CJK punctuation.

    Non-CJK characters also get a `##c` continuation entry so WordPiece splits any word made of
    known characters (e.g. "500ml" -> 5 ##0 ##0 ##m ##l) instead of mapping it to one [UNK].
    """
    chars = {c.lower() for text in texts for c in text if not c.isspace()}
    chars.update(string.ascii_lowercase + string.digits + string.punctuation + CJK_PUNCTUATION)
    ordered = sorted(chars)
    continuations = [f"##{c}" for c in ordered if not _is_cjk(c)]
    return [*SPECIAL_TOKENS, *ordered, *continuations]


def _make_tokenizer(vocab_file: Path) -> BertTokenizerFast:
    # transformers 5 takes the vocab file as `vocab`; CJK characters become single tokens.
    return BertTokenizerFast(
        vocab=str(vocab_file),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        model_max_length=MAX_TOKENS,
    )


def _encode(tokenizer: BertTokenizerFast, rows: Sequence[dict[str, object]]) -> dict:
    return tokenizer(
        [str(row["reviewBody"]) for row in rows],
        [str(row["baseSkuName"]) for row in rows],
        max_length=MAX_TOKENS,
        truncation="longest_first",
        padding="longest",
        return_tensors="pt",
    )


def _train(
    model: BertForSequenceClassification,
    tokenizer: BertTokenizerFast,
    rows: list[dict[str, object]],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    log: Callable[[str], None],
) -> None:
    steps = epochs * math.ceil(len(rows) / batch_size)
    warmup = max(1, steps // 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    # Linear warm-up then linear decay: stable for a transformer trained from scratch.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))),
    )
    labels = torch.tensor([int(row["label"]) for row in rows])  # type: ignore[call-overload]
    model.train()
    started = time.monotonic()
    for epoch in range(epochs):
        order = torch.randperm(len(rows)).tolist()
        total = 0.0
        for start in range(0, len(rows), batch_size):
            index = order[start : start + batch_size]
            batch = _encode(tokenizer, [rows[i] for i in index])
            loss = model(**batch, labels=labels[index]).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
        log(
            f"epoch {epoch + 1}/{epochs}: loss {total / len(rows):.4f}, "
            f"{time.monotonic() - started:.1f}s"
        )
    model.eval()


def _init_char_matching(model: BertForSequenceClassification, heads: int = 4) -> None:
    """Start the first layer's first `heads` heads as "attend to the same character" detectors.

    Whether a review talks about a SKU is mostly whether characters of the SKU name (its product
    word, brand or origin) come back in the review. From a random start a tiny model takes far
    more than a minute to discover that cross-segment matching and memorises product words
    instead; with query = key = one random projection of the embedding, identical characters
    score highest from step one. Word embeddings are scaled up against position and segment
    embeddings so the same character at another position still looks the same, and the value
    reads the segment: a SKU character that also occurs in the review gets a mixed value.
    """
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    embeddings = model.bert.embeddings
    attention = model.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        segments = embeddings.token_type_embeddings.weight
        segment_axis = (segments[0] - segments[1]) / (segments[0] - segments[1]).norm()
        embeddings.word_embeddings.weight.mul_(2.0)
        embeddings.position_embeddings.weight.mul_(0.5)
        embeddings.token_type_embeddings.weight.mul_(0.5)
        for head in range(min(heads, config.num_attention_heads)):
            rows = slice(head * head_dim, (head + 1) * head_dim)
            projection = torch.randn(head_dim, config.hidden_size) / math.sqrt(config.hidden_size)
            attention.query.weight[rows] = 1.5 * projection
            attention.key.weight[rows] = 1.5 * projection
            attention.query.bias[rows] = 0.0
            attention.key.bias[rows] = 0.0
            reader = torch.randn(head_dim, 1)
            attention.value.weight[rows] = 4.0 * reader * segment_axis
            attention.value.bias[rows] = 0.0


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_demo_model(
    out_dir: str | Path,
    *,
    train_size: int = TRAIN_EXAMPLES,
    test_size: int = 1000,
    epochs: int | None = None,
    seed: int = 0,
    hidden_size: int = 128,
    num_layers: int = 2,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    log: Callable[[str], None] | None = print,
) -> DemoModelReport:
    """Train on synthetic comments, save to `out_dir`, measure accuracy on held-out comments.

    `epochs=None` makes as many passes as needed to see about TRAIN_EXAMPLES examples.
    """
    if epochs is None:
        epochs = max(1, round(TRAIN_EXAMPLES / max(1, train_size)))
    emit = log or (lambda _message: None)
    with demo_build(out_dir, train_size, test_size, seed) as build:
        train_rows, build_dir = build.train_rows, build.build_dir
        texts = [str(r[k]) for r in train_rows + build.test_rows
                 for k in ("reviewBody", "baseSkuName")]
        vocab = build_vocab(texts)
        vocab_file = build_dir / "vocab.txt"
        vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = _make_tokenizer(vocab_file)
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=max(1, hidden_size // 32),
            intermediate_size=hidden_size * 2,
            max_position_embeddings=128,
            type_vocab_size=2,
            num_labels=2,
            id2label={0: "no_match", 1: "match"},
            label2id={"no_match": 0, "match": 1},
            pad_token_id=vocab.index("[PAD]"),
        )
        config.streamapp_model_name = MODEL_NAME
        config.streamapp_model_version = MODEL_VERSION
        emit(f"training demo model: {len(vocab)} tokens, {train_size} examples, {epochs} epochs")
        # A private RNG stream: reproducible for a seed, no side effect on the caller's RNG.
        with _torch_threads(2), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForSequenceClassification(config)
            _init_char_matching(model)
            _train(
                model,
                tokenizer,
                train_rows,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                log=emit,
            )
        model.save_pretrained(build_dir, safe_serialization=True)
        tokenizer.save_pretrained(build_dir)
    test_rows = build.test_rows
    classifier = SkuMatchClassifier.load(build.out_dir, device="cpu")
    report = build.report(classifier.predict(
        [str(r["reviewBody"]) for r in test_rows], [str(r["baseSkuName"]) for r in test_rows]))
    emit(f"saved {report.path}: held-out accuracy {report.accuracy:.3f} on {len(test_rows)}, "
         f"{report.seconds:.1f}s")
    return report
