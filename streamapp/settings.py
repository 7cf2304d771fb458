"""Worker settings, read only from STREAMAPP_* environment variables and validated at start.

Every setting has a default that works on one machine with the embedded broker; a bad value
stops the worker before it touches Kafka, with a message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "STREAMAPP_"


class SettingsError(ValueError):
    """A setting has a value the worker cannot run with."""


class Settings(BaseModel):
    """All knobs of a worker. The field `batch_size` is read from STREAMAPP_BATCH_SIZE, etc."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = Field("kafka://127.0.0.1:9092", description="bootstrap servers, comma-separated")
    app_id: str = Field("streamapp", description="Faust app id = Kafka consumer group")
    comments_topic: str = Field("comments", description="topic the comments arrive on")
    results_topic: str = Field("sku-matches", description="topic the predictions go to")
    dlq_topic: str = Field("comments-dlq", description="topic for records that cannot be predicted")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of topics the app creates")
    fanout: bool = Field(True, description="repartition comments through the inference topic")
    intake: Literal["agent", "batch"] = Field(
        "agent", description="agent: Faust's take_events; batch: aiokafka batches past Faust's "
                             "per-event path (streamapp.pipeline.intake)")
    fetch_chunks: bool = Field(
        True, description="the comment topic reaches its Faust agent one event per partition "
                         "per fetch (up to batch_size records), not one per record "
                         "(streamapp.pipeline.chunks)")
    model: Path | None = Field(None, description="model directory or root of versions")
    demo_model_dir: Path = Field(Path("var/models/demo"), description="where the demo model lives")
    model_name: str = Field("standard_bert", min_length=1,
                            description="the model's key in the handler's modelNameToPath")
    model_type: Literal["auto", "pytorch", "torchscript", "pmml", "other"] = Field(
        "auto", description="model format; auto = deploy_config.json or the files present")
    model_version: str | None = Field(None, pattern=r"^\d+$",
                                      description="serve this version; unset = the highest")
    reload_interval_s: float = Field(5.0, ge=0, le=3600,
                                     description="how often to look for new versions; 0 = never")
    handler: str | None = Field(None, description="module:Class of a seed-contract handler; "
                                                  "unset = the built-in BERT pair handler")
    handler_batch: Literal["auto", "true", "false"] = Field(
        "auto", description="handler takes lists in reqDict; auto = its accepts_batch")
    pmml_features: str | None = Field(
        None, pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:function (or file.py:function in the version directory) that turns "
                    "a comment's reqDict into extra PMML input fields; unset = the version's "
                    "deploy_config.json `features`")
    pmml_positive: str = Field("1", min_length=1,
                               description="the PMML target value whose probability is the score")
    torchscript_output: int = Field(1, ge=-16, le=16,
                                    description="TorchScript output that is the score (seed: 1)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    quantize: Literal["none", "int8"] = Field(
        "none", description="int8: dynamic int8 linear layers (CPU, built-in handler)")
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = Field(
        "none", description="torch.compile the model with this mode at load (built-in "
                            "handler, pytorch models): fewer, fused kernels, and with "
                            "reduce-overhead CUDA graphs on a GPU; the first batches of each "
                            "kind compile at start (seconds to a minute)")
    model_process: bool = Field(
        True, description="run the model in a child process of the worker, with an interpreter "
                          "of its own (false: on threads of the worker)")
    torch_threads: int | None = Field(None, ge=1, le=256,
                                      description="CPU threads for the model; unset = torch's "
                                                  "default (every core)")
    model_threads: int | None = Field(
        None, ge=1, le=64,
        description="batches the model computes at once, each on a thread of its own with "
                    "cores / model_threads torch threads; unset = 2 on a CPU of two or more "
                    "cores for a handler that allows it (`concurrent_batches = True`), else 1")
    switch_interval_ms: float | None = Field(
        None, gt=0, le=100,
        description="the interpreter's thread switch interval (Python's 5 ms when unset)")
    batch_size: int = Field(64, ge=1, le=4096, description="most comments in one model batch")
    pipeline_depth: int = Field(2, ge=1, le=8,
                                description="batches in flight (1 = one after another)")
    # 5, not 50: a take yields what came within it, and a batch waits for a free model slot
    # (STREAMAPP_PIPELINE_DEPTH), so under load batches fill while the model works; waiting
    # longer for a fuller batch only added latency at low rates (BENCHMARKS.md, Probes).
    batch_wait_ms: int = Field(5, ge=0, le=60_000, description="longest wait to fill a batch")
    counts_window_ms: int = Field(
        250, ge=0, le=10_000, description="consecutive batches' counts merged for this long, "
                                          "then sent to the tables (0 = each batch's own)")
    max_tokens: int = Field(64, ge=8, le=512, description="tokenizer max length (seed: 64)")
    token_budget: int = Field(
        2048, ge=8, le=1_048_576,
        description="most tokens (with padding) in one forward pass; a batch is split into "
                    "length-sorted sub-batches within it (built-in handler)")
    match_threshold: float = Field(0.5, ge=0.0, le=1.0, description="score at or above = match")
    max_review_chars: int = Field(20_000, ge=1, description="longer reviews are dead-lettered")
    dlq_max_value_bytes: int = Field(
        256 * 1024, ge=1024, le=64 * 2**20,
        description="larger original values are cut in dead letters (sha256 kept)")
    input_format: Literal["auto", "json", "delimited"] = Field("auto", description="encoding")
    separator: str = Field(",", min_length=1, description="column separator of delimited records")
    web_port: int = Field(6066, ge=1, le=65535, description="web view port")
    web_bind: str = Field("127.0.0.1", description="web view bind address")
    web_tables: bool = Field(False, description="serve Faust's /table/ routes (table contents)")
    datadir: Path = Field(Path("var/data"), description="table state (RocksDB)")
    store: Literal["rocksdb", "memory"] = Field("rocksdb", description="table store")
    fetch_wait_ms: int = Field(50, ge=1, le=10_000,
                               description="longest wait of a consumer fetch")
    # A broker that answers fetches by polling (the embedded one) delivers a record late by up
    # to about half the fetch wait: p99 31 ms at 50, 16 at 20 (python -m bench.hop). Shorter
    # waits while records flow cut the p99 at half load, but make fetches smaller and more:
    # the broker's and worker's CPU a record rose by half, the demo model end to end lost 3
    # to 4% (BENCHMARKS.md, Probes). On Kafka a fetch is answered when data comes, so the
    # default leaves it off.
    fetch_wait_busy_ms: int | None = Field(
        None, ge=1, le=10_000,
        description="longest wait of a consumer fetch while records flow (a fetch returned "
                    "records within the last second and none is left unread); unset = "
                    "STREAMAPP_FETCH_WAIT_MS always")
    # aiokafka keeps one produce request in flight per broker, and it carries one record
    # batch per partition: with Kafka's 16 KiB a batch of 512 results took four round trips.
    # At most 1,000,000: under Kafka's default max.message.bytes (1,048,588).
    producer_batch_bytes: int = Field(
        512 * 1024, ge=16 * 1024, le=1_000_000,
        description="largest record batch the worker's producer sends to one partition")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients talk to Kafka")
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism")
    sasl_username: str | None = Field(None, description="SASL user")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    sasl_password_file: Path | None = Field(None, description="file holding the SASL password")
    ssl_cafile: Path | None = Field(None, description="CA bundle for the brokers' certificates")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="client key (mutual TLS)")
    ssl_check_hostname: bool = Field(True, description="check the brokers' host names")
    session_timeout_s: float = Field(10.0, gt=0, le=300, description="Kafka group session timeout")
    guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="exactly_once: each batch's outputs and its source offsets in one Kafka "
                    "transaction (needs a broker with transactions, STREAMAPP_INTAKE=batch and "
                    "STREAMAPP_FANOUT=false)")
    instance_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="static group membership (KIP-345), e.g. the pod name: a worker restarted "
                    "with the same id within the session timeout gets its partitions back "
                    "without a rebalance; also names its transactional producer")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    @field_validator("broker")
    @classmethod
    def _broker_urls(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts:
            raise ValueError("needs at least one host:port")
        for host in hosts:
            name, _, port = host.split("://", 1)[-1].rpartition(":")
            if not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{host!r} is not host:port (optionally kafka://host:port)")
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        ok = value in ("auto", "cpu", "cuda") or (
            value.startswith("cuda:") and value[5:].isdigit()
        )
        if not ok:
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _fetch_waits(self) -> Settings:
        if self.fetch_wait_busy_ms is not None and self.fetch_wait_busy_ms > self.fetch_wait_ms:
            raise ValueError("STREAMAPP_FETCH_WAIT_BUSY_MS is the shorter wait while records "
                             f"flow: {self.fetch_wait_busy_ms} > STREAMAPP_FETCH_WAIT_MS "
                             f"{self.fetch_wait_ms}")
        return self

    @model_validator(mode="after")
    def _security_complete(self) -> Settings:
        if self.security_protocol.startswith("SASL_"):
            if not self.sasl_username:
                raise ValueError(f"{self.security_protocol} needs STREAMAPP_SASL_USERNAME")
            if (self.sasl_password is None) == (self.sasl_password_file is None):
                raise ValueError(f"{self.security_protocol} needs one of "
                                 "STREAMAPP_SASL_PASSWORD or STREAMAPP_SASL_PASSWORD_FILE")
        for name in ("sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{self.env_name(name)}: no such file {path}")
        return self

    @model_validator(mode="after")
    def _exactly_once_path(self) -> Settings:
        # Only the batch intake commits its offsets inside the output transaction; in fan-out
        # mode the ingest agent's at-least-once hop would repeat records before it.
        if self.guarantee == "exactly_once" and (self.intake != "batch" or self.fanout):
            raise ValueError("STREAMAPP_GUARANTEE=exactly_once needs STREAMAPP_INTAKE=batch and "
                             "STREAMAPP_FANOUT=false (only the batch intake reading the comment "
                             "topic itself commits offsets inside the output transaction)")
        return self

    def sasl_password_value(self) -> str | None:
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().strip()
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    @property
    def broker_urls(self) -> list[str]:
        """Bootstrap servers as Faust URLs (kafka://host:port)."""
        hosts = [h.strip() for h in self.broker.split(",") if h.strip()]
        return [h if "://" in h else f"kafka://{h}" for h in hosts]

    @property
    def heartbeat_interval_s(self) -> float:
        """A tenth of the session timeout: a member learns of a rebalance (a dead member's
        partitions to take over) within this, not the quarter session it took before."""
        return max(self.session_timeout_s / 10, 0.3)

    @property
    def chunked_comments(self) -> bool:
        """Whether Faust's consumer hands the comment topic over in fetch chunks
        (streamapp.pipeline.chunks): asked for, and a Faust agent reads that topic (ingest
        with the fan-out, the inference agent without)."""
        return self.fetch_chunks and (self.fanout or self.intake == "agent")

    @property
    def model_dir(self) -> Path:
        return self.model if self.model is not None else self.demo_model_dir

    @property
    def uses_demo_model(self) -> bool:
        return self.model is None

    @classmethod
    def env_name(cls, field: str) -> str:
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from its STREAMAPP_* variable; unknown STREAMAPP_* names are errors."""
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name in cls.model_fields:
            raw = env.get(cls.env_name(name))
            if raw is not None and raw.strip() != "":
                values[name] = raw.strip()
        known = {cls.env_name(n) for n in cls.model_fields}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        problems = [f"{k} is not a streamapp setting" for k in unknown]
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            for err in exc.errors():
                if not err["loc"]:  # a check across settings: its message names them
                    problems.append(str(err["msg"]).removeprefix("Value error, "))
                    continue
                field = str(err["loc"][0])
                got = "<secret>" if "password" in field else values.get(field)
                problems.append(f"{cls.env_name(field)}={got!r}: {err['msg']}")
            settings = None
        if problems:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
        assert settings is not None
        return settings

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(variable, default, description) for every setting: the README table comes from here."""
        rows = []
        for name, field in cls.model_fields.items():
            default = "" if field.default is None else str(field.default)
            rows.append((cls.env_name(name), default, field.description or ""))
        return rows
