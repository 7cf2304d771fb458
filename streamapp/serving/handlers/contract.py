"""The seed's handler contract, and how streamapp finds and configures a handler class.

A handler is a class (the seed calls it `Infer`) with
    initialize(configDict)               once, at start (and for each hot-reloaded version)
    preprocess(reqDict, modelSpec)       -> preprocessed
    process(preprocessed, modelSpec)     -> {"result": x}
`configDict` holds exactly modelNameToPath, device, model_type and logger. `reqDict` holds the
comment's fields and `input`, the review text; a handler whose class says
`accepts_batch = True` gets lists (one entry per comment) in every field instead. A batch
handler may add to its result `errors` (per comment: None, or why it failed: that comment
alone is dead-lettered, without bisecting) and `outputs` (per comment: a dict for the
result's `outputs`), as the PMML handler does.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Protocol

import torch

from streamapp.serving.repository import ModelVersion

BUILTIN_HANDLER = "streamapp.serving.handlers.builtin:SkuMatchInfer"


class Handler(Protocol):
    def initialize(self, configDict: dict[str, Any]) -> None: ...

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> Any: ...

    def process(self, preprocessed: Any, modelSpec: Any) -> Any: ...


class HandlerError(Exception):
    """The handler cannot be found, built or initialized; the message says which and why."""


def load_handler_class(spec: str) -> type:
    """`package.module:Class` to the class, with a clear error for each way it can be wrong."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise HandlerError(f"handler {spec!r} must be written module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary module code
        raise HandlerError(f"cannot import handler module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise HandlerError(f"module {module_name!r} has no class {class_name!r}")
    missing = [m for m in ("initialize", "preprocess", "process") if not hasattr(cls, m)]
    if missing:
        raise HandlerError(f"handler {spec} lacks {', '.join(missing)} (the seed's contract)")
    return cls


def accepts_batch(cls: type, setting: str = "auto") -> bool:
    """Whether `input` is a list of texts: the class says so, unless the setting overrides."""
    if setting == "auto":
        return bool(getattr(cls, "accepts_batch", False))
    return setting == "true"


def config_dict(model_name: str, version: ModelVersion, device: torch.device,
                logger: logging.Logger) -> dict[str, Any]:
    """Exactly the keys the seed's platform passes to initialize()."""
    return {
        # The seed's paths end with a separator ("path_1/1/").
        "modelNameToPath": {model_name: str(version.path) + os.sep},
        "device": device,
        "model_type": version.deploy.model_type,
        "logger": logger,
    }
