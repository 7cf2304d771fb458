"""The seed's handler contract: score interpretation, versions, handlers, hot reload."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.records import Reason, SkuMatchResult
from streamapp.serving.engine import BatchTiming, ModelFailure
from streamapp.serving.formats.huggingface import ModelLoadError, SkuMatchClassifier
from streamapp.serving.handlers.builtin import SkuMatchInfer
from streamapp.serving.handlers.contract import (
    HandlerError,
    accepts_batch,
    config_dict,
    load_handler_class,
)
from streamapp.serving.manager import ModelManager
from streamapp.serving.repository import read_deploy_config, resolve
from streamapp.serving.scores import ScoreError, to_scores
from streamapp.settings import Settings
from tests.conftest import (
    StartWorker,
    collect_outputs,
    demo_rows,
    run_failing_worker,
    send,
    steady_feed,
)
from tests.model_builders import hf_version, torchscript_version

REVIEWS = ["红富士苹果很甜，个头很大", "物流很快，客服很耐心", "牛排煎了很香，肉质嫩"]
SKUS = ["山东烟台红富士苹果 5斤装", "澳洲西冷牛排 200g*2", "澳洲西冷牛排 200g*2"]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --- reading a handler's result as scores -----------------------------------------------


@pytest.mark.parametrize(("result", "count", "expected"), [
    (0.8, 1, [0.8]),  # a probability
    (2.0, 1, [sigmoid(2.0)]),  # a logit
    (torch.tensor([0.3]), 1, [0.3]),  # a one-element tensor
    ([0.25, 0.75], 1, [0.75]),  # a pair of class probabilities
    (torch.tensor([[0.25, 0.75]]), 1, [0.75]),  # the seed's pytensor[1] for one text
    ([1.0, 3.0], 1, [sigmoid(2.0)]),  # a pair of logits: softmax
    ([0.1, 0.9, 0.5], 3, [0.1, 0.9, 0.5]),  # a batch of probabilities
    (torch.tensor([[0.2, 0.8], [0.6, 0.4]]), 2, [0.8, 0.4]),  # a batch of pairs
    (torch.tensor([[-1.0], [0.5]]), 2, [sigmoid(-1.0), sigmoid(0.5)]),  # logits, one in 0..1
    ((0.2, 0.4), 2, [0.2, 0.4]),  # a tuple
])
def test_results_become_probabilities(result: Any, count: int, expected: list[float]) -> None:
    assert to_scores(result, count) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("result", "count"), [
    ("yes", 1), (None, 1), ([0.1, 0.2], 3), ([[1, 2, 3]], 1), (math.nan, 1),
    (torch.tensor([math.nan]), 1), ({"x": 1}, 1), ([True], 1),
])
def test_unreadable_results_raise_score_error(result: Any, count: int) -> None:
    with pytest.raises(ScoreError):
        to_scores(result, count)


# --- versions and deploy configs ---------------------------------------------------------


def test_the_highest_version_is_served_unless_one_is_pinned(tiny_model: Path,
                                                             tmp_path: Path) -> None:
    for version in ("1", "2", "10"):
        hf_version(tiny_model, tmp_path / version)
    (tmp_path / "notes").mkdir()  # not a version
    assert resolve(tmp_path).version == "10"  # numeric order, not text order
    assert resolve(tmp_path, pinned="2").path == tmp_path / "2"
    with pytest.raises(ModelLoadError, match="pinned version '7' does not exist"):
        resolve(tmp_path, pinned="7")
    unversioned = resolve(tiny_model)
    assert unversioned.version is None and unversioned.deploy.model_type == "pytorch"


def test_format_comes_from_the_deploy_config_or_the_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "runner.pt").write_bytes(b"")
    assert read_deploy_config(tmp_path / "a").model_type == "torchscript"
    assert read_deploy_config(tmp_path / "a").model_file == "runner.pt"
    (tmp_path / "b").mkdir()
    assert read_deploy_config(tmp_path / "b").model_type == "other"
    (tmp_path / "b" / "deploy_config.json").write_text(
        '{"format": "torchscript", "file": "x.pt", "tokenizer": "tok", "output": 0}')
    deploy = read_deploy_config(tmp_path / "b")
    assert (deploy.model_type, deploy.model_file, deploy.tokenizer, deploy.output_index) == (
        "torchscript", "x.pt", "tok", 0)
    (tmp_path / "b" / "deploy_config.json").write_text('{"model_type": "onnx"}')
    with pytest.raises(ModelLoadError, match="'onnx' is not one of"):
        read_deploy_config(tmp_path / "b")
    (tmp_path / "b" / "deploy_config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match=r"deploy_config.json is unreadable"):
        read_deploy_config(tmp_path / "b")


# --- finding and calling handlers --------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ("no_colon", "must be written module:Class"),
    ("no_such_module_xyz:Infer", "cannot import handler module"),
    ("tests.handlers.seed_infer:Missing", "has no class 'Missing'"),
    ("tests.handlers.failing:ModelFailure", "has no class"),
    ("streamapp.settings:Settings", "lacks initialize, preprocess, process"),
])
def test_a_wrong_handler_spec_is_explained(spec: str, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        load_handler_class(spec)


def test_batch_mode_comes_from_the_class_unless_set() -> None:
    assert accepts_batch(SkuMatchInfer) is True
    seed = load_handler_class("tests.handlers.seed_infer:Infer")
    assert accepts_batch(seed) is False
    assert accepts_batch(seed, "true") is True
    assert accepts_batch(SkuMatchInfer, "false") is False


def manager(model: Path, **env: str) -> ModelManager:
    settings = Settings.from_env({"STREAMAPP_MODEL": str(model),
                                  **{f"STREAMAPP_{k.upper()}": v for k, v in env.items()}})
    return ModelManager(settings)


def test_config_dict_holds_exactly_the_seeds_keys(tiny_model: Path) -> None:
    version = resolve(tiny_model)
    config = config_dict("standard_bert", version, torch.device("cpu"),
                         logging.getLogger("x"))
    assert set(config) == {"modelNameToPath", "device", "model_type", "logger"}
    assert config["modelNameToPath"] == {"standard_bert": f"{tiny_model}/"}
    assert config["device"] == torch.device("cpu")
    assert config["model_type"] == "pytorch"


def test_builtin_handler_on_hf_and_torchscript_gives_the_models_scores(
    tiny_model: Path, tmp_path: Path
) -> None:
    direct = SkuMatchClassifier.load(tiny_model).predict(REVIEWS, SKUS)
    requests = [{"input": r, "baseSkuName": s, "reviewBody": r} for r, s in
                zip(REVIEWS, SKUS, strict=True)]
    hf = manager(tiny_model).load_initial()
    assert hf.run(requests) == pytest.approx(direct, abs=1e-5)
    assert hf.name == "streamapp-demo-sku-match" and hf.batch
    torchscript_version(tiny_model, tmp_path / "ts" / "1")
    scripted = manager(tmp_path / "ts").load_initial()
    assert scripted.version == "1"
    assert scripted.run(requests) == pytest.approx(direct, abs=1e-4)
    assert len(set(direct)) > 1, "the model should tell these pairs apart"


def test_a_compiled_model_gives_the_eager_models_scores(tiny_model: Path) -> None:
    """STREAMAPP_COMPILE: torch.compile through the real loading path, warmed up at load as
    the worker calls the handler (a batch of one compiles apart), with the scores the model
    gives uncompiled."""
    requests = [{"input": r, "baseSkuName": s, "reviewBody": r} for r, s in
                zip(REVIEWS, SKUS, strict=True)]
    eager = manager(tiny_model).load_initial()
    compiled = manager(tiny_model, compile="default").load_initial()
    assert compiled.handler.model.info.compiled == "default"
    assert eager.handler.model.info.compiled is None
    # Served as the worker serves, the warm-up left nothing to compile: a compile on a real
    # batch stalls the model for seconds.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for size in (len(requests), 1, 3):
            assert compiled.run(requests[:size]) == pytest.approx(eager.run(requests[:size]),
                                                                  abs=1e-5)
    # CUDA graphs are recorded per thread: that mode computes one batch at a time.
    assert compiled.concurrent_batches
    graphs = SkuMatchInfer(compile_mode="reduce-overhead")
    assert graphs.concurrent_batches is False


def test_compile_is_refused_with_int8_and_for_torchscript(tiny_model: Path,
                                                         tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not offered together"):
        SkuMatchClassifier.load(tiny_model, quantize=True, compile_mode="default")
    torchscript_version(tiny_model, tmp_path / "ts" / "1")
    with pytest.raises(HandlerError, match="compiled already"):
        manager(tmp_path / "ts", compile="default").load_initial()


def test_seed_handler_runs_per_record_with_the_seeds_padding(tiny_model: Path,
                                                             tmp_path: Path) -> None:
    torchscript_version(tiny_model, tmp_path / "ts" / "1")
    loaded = manager(tmp_path / "ts", handler="tests.handlers.seed_infer:Infer").load_initial()
    assert not loaded.batch and loaded.name == "standard_bert" and loaded.version == "1"
    outcomes = loaded.run([{"input": r, "baseSkuName": s} for r, s in
                           zip(REVIEWS, SKUS, strict=True)])
    assert all(isinstance(o, float) and 0 <= o <= 1 for o in outcomes)
    # The seed's handler scores the review alone, padded to 64: its own single-text scores.
    classifier = SkuMatchClassifier.load(tiny_model)
    single = classifier.probabilities(classifier._tokenizer(
        REVIEWS, max_length=64, padding="max_length", truncation=True, return_tensors="pt"))
    assert outcomes == pytest.approx(single.tolist(), abs=1e-4)


def test_a_per_record_handler_failure_is_that_records_alone(tiny_model: Path) -> None:
    loaded = manager(tiny_model, handler="tests.handlers.failing:Echo").load_initial()
    outcomes = loaded.run([{"input": x} for x in ("0.9", "raise", "garbage", "no result",
                                                    "3.0")])
    assert outcomes[0] == 0.9 and outcomes[4] == pytest.approx(sigmoid(3.0))
    raised, garbage, no_result = outcomes[1:4]
    assert isinstance(raised, ModelFailure) and raised.reason == Reason.MODEL_ERROR
    assert "cannot handle this one" in raised.error
    assert isinstance(garbage, ModelFailure) and garbage.reason == Reason.BAD_MODEL_OUTPUT
    assert isinstance(no_result, ModelFailure) and "{'result': ...}" in no_result.error


def test_a_handler_raising_in_initialize_is_a_handler_error(tiny_model: Path) -> None:
    with pytest.raises(HandlerError, match=r"failed in initialize.*license server unreachable"):
        manager(tiny_model, handler="tests.handlers.failing:FailsToInitialize").load_initial()


# --- hot reload --------------------------------------------------------------------------


def test_new_versions_swap_in_removed_ones_roll_back_broken_ones_are_reported(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    hf_version(tiny_model, root / "1")
    models = manager(root)
    assert models.load_initial().version == "1"
    reload = lambda: asyncio.run(models.maybe_reload())  # noqa: E731

    assert reload() is False  # nothing new
    hf_version(tiny_model, root / "2")
    assert reload() is True and models.current.version == "2"
    shutil.rmtree(root / "2")
    assert reload() is True and models.current.version == "1"  # rolled back

    broken = root / "3"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert reload() is False
    assert models.current.version == "1"
    assert models.last_error is not None and models.last_error["version"] == "3"
    assert str(broken) in models.last_error["error"]
    assert models.status()["last_reload_error"] == models.last_error
    assert reload() is False  # not retried while unchanged
    shutil.rmtree(broken)
    hf_version(tiny_model, broken)
    assert reload() is True and models.current.version == "3"
    assert models.last_error is None and models.reloads == 3


# --- in a real worker --------------------------------------------------------------------

RESULTS, DLQ = "sku-matches", "comments-dlq"


@pytest.mark.integration
def test_the_seeds_handler_runs_unchanged_in_a_worker(
    broker: EmbeddedBroker, start_worker: StartWorker, tiny_model: Path, tmp_path: Path
) -> None:
    torchscript_version(tiny_model, tmp_path / "seed-model" / "1")
    worker = start_worker(model=str(tmp_path / "seed-model"),
                          handler="tests.handlers.seed_infer:Infer")
    ids = send(broker, [orjson.dumps(r) for r in demo_rows(60, seed=21)])
    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids))
    assert set(outputs) == set(ids)
    results = [SkuMatchResult.model_validate(v[0][1]) for v in outputs.values()]
    assert all(len(v) == 1 and v[0][0] == RESULTS for v in outputs.values())
    assert {(r.model.name, r.model.version) for r in results} == {("standard_bert", "1")}
    assert len({round(r.score, 6) for r in results}) > 1
    # streamapp still batches (and acks) around the per-record handler calls.
    assert max(r.timing.batch_size for r in results) > 1
    model = worker.stats()["model"]
    assert model["handler"] == "tests.handlers.seed_infer:Infer" and model["batch"] is False


@pytest.mark.integration
def test_a_handler_failing_in_initialize_stops_the_worker_with_its_message(
    broker: EmbeddedBroker, tiny_model: Path, tmp_path: Path
) -> None:
    code, log = run_failing_worker(
        {"broker": broker.url, "model": str(tiny_model), "web_port": str(free_port()),
         "datadir": str(tmp_path / "data"),
         "handler": "tests.handlers.failing:FailsToInitialize"}, tmp_path)
    assert code == 2
    assert "license server unreachable" in log and "Traceback" not in log


@pytest.mark.integration
@pytest.mark.slow
def test_hot_swap_under_a_steady_stream_loses_and_repeats_nothing(
    broker: EmbeddedBroker, start_worker: StartWorker, tiny_model: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    hf_version(tiny_model, root / "1")
    worker = start_worker(model=str(root), reload_interval_s="0.5")
    rows = demo_rows(600, seed=22)
    ids: list[str] = []

    feeder = steady_feed(broker, rows, ids)  # about 100 comments a second for six seconds
    time.sleep(2.0)
    hf_version(tiny_model, root / "2")
    feeder.join()
    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids), timeout=120)

    assert set(outputs) == set(ids) and len(ids) == len(rows)
    assert all(len(v) == 1 and v[0][0] == RESULTS for v in outputs.values())
    results = [SkuMatchResult.model_validate(v[0][1]) for v in outputs.values()]
    by_version: dict[str, list[SkuMatchResult]] = {}
    for result in results:
        by_version.setdefault(result.model.version, []).append(result)
    assert set(by_version) == {"1", "2"}, "the swap should happen mid-stream"
    model = worker.stats()["model"]
    assert model["version"] == "2" and model["reloads"] == 1
    # A batch reads the model once, when the model process takes it: one version per batch,
    # every version-1 batch started before the swap, and none after a version-2 one.
    # (batch_started_at is the worker's clock, taken before the batch is handed to the model
    # process: a batch started there a few ms before the swap may still meet version 2.)
    swapped_ms = model["swapped_at"] * 1000
    versions_per_batch: dict[int, set[str]] = {}
    for result in results:
        versions_per_batch.setdefault(result.timing.batch_started_at, set()).add(
            result.model.version)
    assert all(len(v) == 1 for v in versions_per_batch.values()), versions_per_batch

    def starts(version: str) -> list[int]:
        return [r.timing.batch_started_at for r in by_version[version]]

    assert max(starts("1")) <= swapped_ms
    assert max(starts("1")) <= min(starts("2"))


def test_a_batch_reports_its_tokenize_and_model_time_and_tokens(tiny_model: Path,
                                                               tmp_path: Path) -> None:
    requests = [{"input": r, "baseSkuName": s} for r, s in zip(REVIEWS, SKUS, strict=True)]
    timing = BatchTiming()
    manager(tiny_model).load_initial().run(requests, timing)
    assert timing.preprocess_s > 0 and timing.process_s > 0
    # Padded to the longest pair: the padding is what shorter pairs lack.
    assert 0 < timing.tokens < timing.padded_tokens <= len(requests) * 64
    torchscript_version(tiny_model, tmp_path / "ts" / "1")
    seed = manager(tmp_path / "ts", handler="tests.handlers.seed_infer:Infer").load_initial()
    seed_timing = BatchTiming()
    seed.run(requests, seed_timing)
    assert seed_timing.padded_tokens == len(requests) * 64  # the seed pads to max_length
    assert 0 < seed_timing.tokens < seed_timing.padded_tokens
