"""Where models live on disk: version directories and their deploy configs.

STREAMAPP_MODEL names either one model directory or a root of version directories
(`1/`, `2/`, ...), as the seed's serving platform lays them out. The highest version is
served unless one is pinned. A version's format comes from its `deploy_config.json` (as the
seed's deployer reads it) or, without one, from the files present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from streamapp.serving.formats.huggingface import ModelLoadError

DEPLOY_CONFIG = "deploy_config.json"
ModelType = Literal["pytorch", "torchscript", "pmml", "other"]
MODEL_TYPES: tuple[ModelType, ...] = ("pytorch", "torchscript", "pmml", "other")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
PMML_SUFFIX = ".pmml"


@dataclass(frozen=True)
class DeployConfig:
    """How to load one model version."""

    model_type: ModelType
    model_file: str | None = None  # TorchScript or PMML file, relative to the version directory
    tokenizer: str = "."  # tokenizer directory, relative to the version directory
    output_index: int | None = None  # which output of a TorchScript module is the score
    features: str | None = None  # a PMML model's feature function, module:function


@dataclass(frozen=True)
class ModelVersion:
    """One servable model: a version directory (or an unversioned model directory)."""

    root: Path
    version: str | None  # None for an unversioned directory
    path: Path
    deploy: DeployConfig

    @property
    def label(self) -> str:
        return self.version if self.version is not None else "unversioned"


def version_dirs(root: Path) -> list[Path]:
    """Numeric subdirectories, lowest version first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found, key=lambda p: int(p.name))


def _detect(path: Path) -> DeployConfig:
    if (path / "config.json").is_file():
        return DeployConfig("pytorch")
    scripts = sorted(p.name for p in path.iterdir() if p.suffix in TORCHSCRIPT_SUFFIXES)
    if len(scripts) == 1:
        return DeployConfig("torchscript", model_file=scripts[0])
    pmml = sorted(p.name for p in path.iterdir() if p.suffix == PMML_SUFFIX)
    if len(pmml) == 1:
        return DeployConfig("pmml", model_file=pmml[0])
    return DeployConfig("other")


def read_deploy_config(path: Path, model_type: str = "auto") -> DeployConfig:
    """The version's deploy_config.json, else what its files say; `model_type` overrides."""
    config_file = path / DEPLOY_CONFIG
    if config_file.is_file():
        try:
            raw: Any = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(path, f"{DEPLOY_CONFIG} is unreadable ({exc})") from exc
        if not isinstance(raw, dict):
            raise ModelLoadError(path, f"{DEPLOY_CONFIG} must hold a JSON object")
        found = str(raw.get("model_type") or raw.get("format") or _detect(path).model_type)
        if found not in MODEL_TYPES:
            raise ModelLoadError(path, f"{DEPLOY_CONFIG}: model_type {found!r} is not one of "
                                       f"{', '.join(MODEL_TYPES)}")
        output = raw.get("output_index", raw.get("output"))
        if output is not None and not isinstance(output, int):
            raise ModelLoadError(path, f"{DEPLOY_CONFIG}: output_index must be an integer")
        features = raw.get("features")
        if features is not None and not isinstance(features, str):
            raise ModelLoadError(path, f"{DEPLOY_CONFIG}: features must be module:function")
        deploy = DeployConfig(
            model_type=cast(ModelType, found),
            model_file=raw.get("model_file") or raw.get("file") or _detect(path).model_file,
            tokenizer=str(raw.get("tokenizer") or "."),
            output_index=output,
            features=features,
        )
    else:
        deploy = _detect(path)
    if model_type != "auto" and model_type != deploy.model_type:
        deploy = DeployConfig(cast(ModelType, model_type), deploy.model_file, deploy.tokenizer,
                              deploy.output_index, deploy.features)
    return deploy


def resolve(root: Path, *, pinned: str | None = None, model_type: str = "auto") -> ModelVersion:
    """The version to serve under `root`: the pinned one, else the highest."""
    if not root.is_dir():
        raise ModelLoadError(root, "directory does not exist")
    versions = version_dirs(root)
    if pinned is not None:
        chosen = root / pinned
        if not chosen.is_dir():
            have = ", ".join(p.name for p in versions) or "none"
            raise ModelLoadError(root, f"pinned version {pinned!r} does not exist (versions: "
                                       f"{have})")
        return ModelVersion(root, pinned, chosen, read_deploy_config(chosen, model_type))
    if versions:
        newest = versions[-1]
        return ModelVersion(root, newest.name, newest, read_deploy_config(newest, model_type))
    return ModelVersion(root, None, root, read_deploy_config(root, model_type))
