"""Tests for reading and validating the STREAMAPP_* settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from streamapp.settings import Settings, SettingsError


def problems_of(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    return str(info.value)


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.broker == "kafka://127.0.0.1:9092"
    assert settings.broker_urls == ["kafka://127.0.0.1:9092"]
    assert settings.app_id == "streamapp"
    assert settings.comments_topic == "comments"
    assert settings.results_topic == "sku-matches"
    assert settings.dlq_topic == "comments-dlq"
    assert settings.batch_size == 64
    assert settings.batch_wait_ms == 5
    assert settings.max_tokens == 64
    assert settings.match_threshold == 0.5
    assert settings.device == "auto"
    assert settings.torch_threads is None
    assert settings.input_format == "auto"
    assert settings.separator == ","
    assert settings.max_review_chars == 20_000
    assert settings.store == "rocksdb"
    assert settings.model is None
    assert settings.uses_demo_model is True
    assert settings.model_dir == Path("var/models/demo")


# A non-default value for every setting, and what it reads as.
EVERY_SETTING: dict[str, tuple[str, Any]] = {
    "broker": ("kafka://kafka-1:9092", "kafka://kafka-1:9092"),
    "app_id": ("sku-match", "sku-match"),
    "comments_topic": ("hive.comments", "hive.comments"),
    "results_topic": ("matches", "matches"),
    "dlq_topic": ("dead", "dead"),
    "partitions": ("12", 12),
    "fanout": ("false", False),
    "intake": ("batch", "batch"),
    "model": ("/models/sku-v3", Path("/models/sku-v3")),
    "demo_model_dir": ("/tmp/demo", Path("/tmp/demo")),
    "device": ("cuda:1", "cuda:1"),
    "model_name": ("sku_bert", "sku_bert"),
    "model_type": ("torchscript", "torchscript"),
    "model_version": ("3", "3"),
    "reload_interval_s": ("0", 0.0),
    "handler": ("team.handlers:Infer", "team.handlers:Infer"),
    "handler_batch": ("false", "false"),
    "torchscript_output": ("0", 0),
    "pmml_features": ("team.features:extra", "team.features:extra"),
    "pmml_positive": ("yes", "yes"),
    "model_process": ("false", False),
    "model_threads": ("3", 3),
    "torch_threads": ("4", 4),
    "switch_interval_ms": ("0.5", 0.5),
    "quantize": ("int8", "int8"),
    "compile": ("reduce-overhead", "reduce-overhead"),
    "batch_size": ("128", 128),
    "pipeline_depth": ("1", 1),
    "batch_wait_ms": ("0", 0),
    "counts_window_ms": ("0", 0),
    "max_tokens": ("128", 128),
    "token_budget": ("16384", 16384),
    "match_threshold": ("0.75", 0.75),
    "max_review_chars": ("5000", 5000),
    "dlq_max_value_bytes": ("4096", 4096),
    "input_format": ("delimited", "delimited"),
    "separator": ("\x01", "\x01"),
    "web_port": ("8080", 8080),
    "web_bind": ("0.0.0.0", "0.0.0.0"),
    "web_tables": ("true", True),
    "datadir": ("/var/lib/streamapp", Path("/var/lib/streamapp")),
    "store": ("memory", "memory"),
    "session_timeout_s": ("30.5", 30.5),
    "fetch_wait_ms": ("20", 20),
    "fetch_wait_busy_ms": ("3", 3),
    "producer_batch_bytes": ("65536", 65536),
    "fetch_chunks": ("false", False),
    "security_protocol": ("SSL", "SSL"),
    "sasl_mechanism": ("PLAIN", "PLAIN"),
    "sasl_username": ("svc-streamapp", "svc-streamapp"),
    "sasl_password": ("pw", SecretStr("pw")),
    "sasl_password_file": (__file__, Path(__file__)),  # any existing file
    "ssl_cafile": (__file__, Path(__file__)),
    "ssl_certfile": (__file__, Path(__file__)),
    "ssl_keyfile": (__file__, Path(__file__)),
    "ssl_check_hostname": ("false", False),
    "log_level": ("debug", "debug"),
    "guarantee": ("exactly_once", "exactly_once"),
    "instance_id": ("streamapp-worker-7", "streamapp-worker-7"),
}

# Settings that a case above needs beside it.
COMPANIONS = {"guarantee": {"STREAMAPP_INTAKE": "batch", "STREAMAPP_FANOUT": "false"}}


def test_every_setting_has_a_case_here() -> None:
    assert set(EVERY_SETTING) == set(Settings.model_fields)


def test_the_token_budget_default_is_the_classifiers() -> None:
    from streamapp.serving.formats.huggingface import DEFAULT_TOKEN_BUDGET

    assert Settings().token_budget == DEFAULT_TOKEN_BUDGET


@pytest.mark.parametrize(("field", "raw", "expected"),
                         [(f, raw, exp) for f, (raw, exp) in EVERY_SETTING.items()])
def test_each_variable_is_read(field: str, raw: str, expected: Any) -> None:
    settings = Settings.from_env({f"STREAMAPP_{field.upper()}": raw, **COMPANIONS.get(field, {})})
    assert getattr(settings, field) == expected
    assert getattr(settings, field) != getattr(Settings(), field)


def test_all_variables_together() -> None:
    env = {Settings.env_name(f): raw for f, (raw, _) in EVERY_SETTING.items()}
    settings = Settings.from_env(env)
    for field, (_, expected) in EVERY_SETTING.items():
        assert getattr(settings, field) == expected, field
    assert settings.uses_demo_model is False
    assert settings.model_dir == Path("/models/sku-v3")


def test_the_producer_batch_size_reaches_faust_and_kafkas_limit_is_kept() -> None:
    from streamapp.application import faust_config

    settings = Settings.from_env({"STREAMAPP_PRODUCER_BATCH_BYTES": "65536"})
    assert faust_config(settings)["producer_max_batch_size"] == 65536
    assert faust_config(Settings())["producer_max_batch_size"] == 512 * 1024
    assert "PRODUCER_BATCH_BYTES" in problems_of({"STREAMAPP_PRODUCER_BATCH_BYTES": "2000000"})


def test_env_name() -> None:
    assert Settings.env_name("batch_size") == "STREAMAPP_BATCH_SIZE"


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [k for k in os.environ if k.startswith("STREAMAPP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STREAMAPP_BATCH_SIZE", "7")
    monkeypatch.setenv("STREAMAPP_DEVICE", "cpu")
    settings = Settings.from_env()
    assert settings.batch_size == 7
    assert settings.device == "cpu"


def test_blank_value_means_default_and_values_are_stripped() -> None:
    settings = Settings.from_env(
        {"STREAMAPP_BATCH_SIZE": "  ", "STREAMAPP_TORCH_THREADS": "", "STREAMAPP_DEVICE": " cpu\n"}
    )
    assert settings.batch_size == 64
    assert settings.torch_threads is None
    assert settings.device == "cpu"


def test_other_variables_are_ignored() -> None:
    settings = Settings.from_env({"PATH": "/bin", "KAFKA_BROKER": "x", "streamapp_foo": "1"})
    assert settings == Settings()


@pytest.mark.parametrize(
    ("broker", "urls"),
    [
        ("kafka://a:9092,kafka://b:9093", ["kafka://a:9092", "kafka://b:9093"]),
        ("a:9092, b:9093 ,c:9094,", ["kafka://a:9092", "kafka://b:9093", "kafka://c:9094"]),
        ("10.0.0.5:29092", ["kafka://10.0.0.5:29092"]),
        ("kafka://a:9092, 10.0.0.7:9092", ["kafka://a:9092", "kafka://10.0.0.7:9092"]),
    ],
)
def test_broker_list(broker: str, urls: list[str]) -> None:
    assert Settings.from_env({"STREAMAPP_BROKER": broker}).broker_urls == urls


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_good_devices(device: str) -> None:
    assert Settings.from_env({"STREAMAPP_DEVICE": device}).device == device


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAMAPP_BATCH_SIZE", "lots"),
        ("STREAMAPP_BATCH_SIZE", "0"),
        ("STREAMAPP_BATCH_SIZE", "-5"),
        ("STREAMAPP_BATCH_SIZE", "1.5"),
        ("STREAMAPP_DEVICE", "gpu"),
        ("STREAMAPP_DEVICE", "cuda:x"),
        ("STREAMAPP_DEVICE", "CPU"),
        ("STREAMAPP_MATCH_THRESHOLD", "1.5"),
        ("STREAMAPP_MATCH_THRESHOLD", "-0.1"),
        ("STREAMAPP_MATCH_THRESHOLD", "half"),
        ("STREAMAPP_BROKER", "nohost"),
        ("STREAMAPP_BROKER", "kafka://host:port"),
        ("STREAMAPP_BROKER", "a:9092,nohost"),
        ("STREAMAPP_BROKER", ",,"),
        ("STREAMAPP_INPUT_FORMAT", "xml"),
        ("STREAMAPP_STORE", "redis"),
        ("STREAMAPP_LOG_LEVEL", "verbose"),
        ("STREAMAPP_PARTITIONS", "0"),
        ("STREAMAPP_WEB_PORT", "70000"),
        ("STREAMAPP_MAX_TOKENS", "4"),
        ("STREAMAPP_SESSION_TIMEOUT_S", "0"),
        ("STREAMAPP_TORCH_THREADS", "none"),
        ("STREAMAPP_WEB_TABLES", "maybe"),
        ("STREAMAPP_PMML_FEATURES", "features_without_function"),
        ("STREAMAPP_MODEL_TYPE", "onnx"),
    ],
)
def test_bad_value_names_variable_and_value(variable: str, value: str) -> None:
    message = problems_of({variable: value})
    assert f"{variable}={value!r}" in message
    assert message.count("\n") == 1, "exactly one problem is reported"


def test_unknown_variable_is_an_error() -> None:
    message = problems_of({"STREAMAPP_FOO": "1"})
    assert "STREAMAPP_FOO" in message
    assert "not a streamapp setting" in message


def test_misspelled_variable_is_an_error_even_with_good_ones() -> None:
    message = problems_of({"STREAMAPP_BATCH_SIZE": "8", "STREAMAPP_BATCHSIZE": "16"})
    assert "STREAMAPP_BATCHSIZE" in message
    assert "STREAMAPP_BATCH_SIZE=" not in message


def test_several_problems_are_reported_together() -> None:
    message = problems_of({
        "STREAMAPP_FOO": "1",
        "STREAMAPP_BATCH_SIZE": "0",
        "STREAMAPP_DEVICE": "gpu",
        "STREAMAPP_MATCH_THRESHOLD": "2",
        "STREAMAPP_BROKER": "nohost",
        "STREAMAPP_APP_ID": "fine",
    })
    lines = message.splitlines()[1:]
    assert len(lines) == 5
    for expected in ("STREAMAPP_FOO", "STREAMAPP_BATCH_SIZE='0'", "STREAMAPP_DEVICE='gpu'",
                     "STREAMAPP_MATCH_THRESHOLD='2'", "STREAMAPP_BROKER='nohost'"):
        assert sum(expected in line for line in lines) == 1, expected
    assert "APP_ID" not in message


def test_the_busy_fetch_wait_is_the_shorter_one() -> None:
    assert Settings.from_env({}).fetch_wait_busy_ms is None  # off: the one wait always
    assert Settings.from_env({"STREAMAPP_FETCH_WAIT_BUSY_MS": "50"}).fetch_wait_busy_ms == 50
    assert "shorter wait" in problems_of({"STREAMAPP_FETCH_WAIT_BUSY_MS": "60"})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_settings_are_frozen_and_reject_unknown_fields() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.batch_size = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(batch_sizes=1)  # type: ignore[call-arg]


def test_describe_covers_every_field() -> None:
    rows = Settings.describe()
    assert [r[0] for r in rows] == [Settings.env_name(f) for f in Settings.model_fields]
    assert all(description for _, _, description in rows)
    table = {variable: default for variable, default, _ in rows}
    assert table["STREAMAPP_BATCH_SIZE"] == "64"
    assert table["STREAMAPP_BROKER"] == "kafka://127.0.0.1:9092"
    assert table["STREAMAPP_MODEL"] == ""
    assert table["STREAMAPP_TORCH_THREADS"] == ""
    assert table["STREAMAPP_MATCH_THRESHOLD"] == "0.5"
    assert table["STREAMAPP_DEMO_MODEL_DIR"] == str(Path("var/models/demo"))


def test_describe_defaults_read_back_as_the_defaults() -> None:
    env = {variable: default for variable, default, _ in Settings.describe() if default}
    assert Settings.from_env(env) == Settings()


@pytest.mark.parametrize("env", [{}, {"STREAMAPP_INTAKE": "batch"},
                                 {"STREAMAPP_FANOUT": "false"}])
def test_exactly_once_needs_the_batch_intake_on_the_comment_topic(env: dict[str, str]) -> None:
    problems = problems_of({"STREAMAPP_GUARANTEE": "exactly_once", **env})
    assert "STREAMAPP_GUARANTEE=exactly_once needs STREAMAPP_INTAKE=batch and " \
           "STREAMAPP_FANOUT=false" in problems


def test_instance_id_must_be_a_kafka_friendly_name() -> None:
    assert "STREAMAPP_INSTANCE_ID='pod 1'" in problems_of({"STREAMAPP_INSTANCE_ID": "pod 1"})
