"""The production compose file agrees with the settings the worker reads (Docker cannot run
here, so this is as far as it can be checked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def worker_env() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["worker"]["environment"].items()}


def test_worker_environment_is_valid_streamapp_settings() -> None:
    settings = Settings.from_env(worker_env())  # raises on unknown names or bad values
    assert settings.broker_urls == ["kafka://kafka:9092"]
    assert settings.web_bind == "0.0.0.0"  # reachable through the published port
    assert settings.device == "cuda"
    assert settings.intake == "batch" and not settings.fanout  # the GPU path


def test_topics_created_are_the_topics_the_worker_uses() -> None:
    services = compose()["services"]
    script = services["create-topics"]["command"][0]
    settings = Settings.from_env(worker_env())
    for topic in (settings.comments_topic, settings.results_topic, settings.dlq_topic):
        assert topic in script
    assert services["create-topics"]["environment"]["PARTITIONS"] == str(settings.partitions)
    assert "kafka:9092" in script


def test_worker_scales_with_a_gpu_and_the_model_mounted() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker  # --scale needs generated names
    assert all(":" not in str(p) for p in worker["ports"])  # no fixed host port
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    model = Settings.from_env(worker_env()).model
    assert model is not None
    mounts = [str(v).split(":") for v in worker["volumes"]]
    assert any(model.is_relative_to(target) for _, target, *_ in mounts)
    depends = worker["depends_on"]["create-topics"]["condition"]
    assert depends == "service_completed_successfully"


def test_dockerfile_runs_the_faust_worker() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["faust", "-A", "streamapp", "worker"' in dockerfile
    assert "torch==2.13.0" in dockerfile
