"""The PMML handler: a PMML model served through the same pipeline as BERT, written to the
seed's contract (initialize / preprocess / process).

`preprocess` (the engine's tokenizer thread) builds one input row per comment: the model's
input fields taken by name from the comment's fields, plus what the feature function returns
(the seed's `enable_preprocess`). `process` (the model thread) scores the batch through the
evaluator seam, `streamapp.serving.formats.pmml`. A row the evaluator rejects comes back as
that row's error (`errors`), so only that comment is dead-lettered, without bisecting; every
output field of the model comes back as the row's `outputs` (the seed's `use_json_result`).
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamapp.records import CATEGORY_FIELDS
from streamapp.serving.formats.huggingface import ModelLoadError
from streamapp.serving.formats.pmml import PmmlModel, load_pmml
from streamapp.serving.repository import DEPLOY_CONFIG, PMML_SUFFIX, read_deploy_config

PMML_HANDLER = "streamapp.serving.handlers.pmml:PmmlInfer"
COMMENT_FIELDS = ("dataType", "baseSkuName", "reviewBody", *CATEGORY_FIELDS)
# A comment that every field of the seed's job fills: what the feature function is tried on
# at start, to learn which input fields it provides.
PROBE_REQUEST = {"dataType": "COMMENT_LONG_TEXT", "baseSkuName": "红富士苹果 5斤装",
                 "reviewBody": "苹果很甜", "categoryFirstName": "生鲜",
                 "categorySecondName": "水果", "categoryThirdName": "苹果",
                 "categoryFourthName": "红富士", "categoryFifthName": "", "input": "苹果很甜"}

# The JVM compiles a method after ~10,000 calls: until some 20,000 rows the evaluator runs
# several times slower (measured: 2,300 -> 7,700 -> 16,000+ rows/s over three passes of 10,000).
WARMUP_ROWS, WARMUP_BATCH, WARMUP_MAX_S = 20_480, 256, 5.0

Features = Callable[[dict[str, Any]], dict[str, Any]]


def load_feature_function(spec: str, version_dir: Path) -> Features:
    """`package.module:function`, or `file.py:function` for a file in the version directory
    (a feature function shipped beside the model)."""
    module_name, _, function_name = spec.partition(":")
    try:
        if module_name.endswith(".py"):
            file = version_dir / module_name
            module_spec = importlib.util.spec_from_file_location(
                f"streamapp_pmml_features_{abs(hash(str(file)))}", file)
            if module_spec is None or module_spec.loader is None or not file.is_file():
                raise FileNotFoundError(f"no file {file}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary module code
        raise ModelLoadError(version_dir, f"cannot load the PMML feature function {spec!r}: "
                                          f"{type(exc).__name__}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ModelLoadError(version_dir, f"PMML feature function {spec!r}: {module_name} has "
                                          f"no function {function_name!r}")
    return function  # type: ignore[no-any-return]


def pmml_file(version_dir: Path, model_file: str | None) -> Path:
    if model_file is not None:
        return version_dir / model_file
    found = sorted(version_dir.glob(f"*{PMML_SUFFIX}"))
    if len(found) != 1:
        raise ModelLoadError(version_dir, f"expected one {PMML_SUFFIX} file, found "
                                          f"{len(found)}: name it in deploy_config.json")
    return found[0]


def input_row(request: dict[str, Any], features: Features | None) -> dict[str, Any]:
    """One comment's candidate input fields: its own fields (an empty category level is "no
    such level": missing to the model), then what the feature function returns."""
    row = {name: request[name] or None for name in COMMENT_FIELDS if name in request}
    if features is not None:
        extra = features(request)
        if not isinstance(extra, dict):
            raise TypeError(f"returned {type(extra).__name__}, not a dict of input fields")
        row.update(extra)
    return row


@dataclass
class PmmlBatch:
    """Preprocessed rows; `errors[i]` is set when row i could not be built."""

    rows: list[dict[str, Any]]
    errors: list[str | None]


class PmmlInfer:
    """Comments -> the PMML model's probability of the positive target value."""

    accepts_batch = True
    # Both stages hold the GIL (the feature function in Python, then a JPype call into Java
    # per row): in two threads each waited out the other's switch interval (BENCHMARKS.md,
    # Probes), so the engine runs them one after the other in its model thread.
    overlap_stages = False

    def __init__(self, positive: str = "1", features: str | None = None) -> None:
        self.positive = positive
        self.features_spec = features
        self.features: Features | None = None
        self.model: PmmlModel | None = None
        self.needed: list[str] = []

    def initialize(self, configDict: dict[str, Any]) -> None:
        [path_text] = configDict["modelNameToPath"].values()
        version_dir = Path(path_text)
        self.load(pmml_file(version_dir, read_deploy_config(version_dir, "pmml").model_file))
        assert self.model is not None
        configDict["logger"].info("PMML handler loaded %s: inputs %s, score = %s",
                                  self.model.path, ", ".join(self.needed),
                                  self.model.score_field)

    def load(self, file: Path) -> None:
        """Load `file` with the feature function (this handler's, else the one its
        directory's deploy_config.json names) and check that every input is provided."""
        version_dir = file.parent
        if not self.features_spec and (version_dir / DEPLOY_CONFIG).is_file():
            self.features_spec = read_deploy_config(version_dir, "pmml").features
        if self.features_spec:
            self.features = load_feature_function(self.features_spec, version_dir)
        self.model = load_pmml(file, self.positive)
        self.needed = [f.name for f in self.model.inputs]
        try:
            provided = set(input_row(dict(PROBE_REQUEST), self.features))
        except Exception as exc:
            raise ModelLoadError(file, f"the feature function {self.features_spec} failed on a "
                                       f"sample comment: {type(exc).__name__}: {exc}") from exc
        missing = [name for name in self.needed if name not in provided]
        if missing:
            via = (f"the feature function {self.features_spec}" if self.features_spec else
                   "a feature function (none set: STREAMAPP_PMML_FEATURES or deploy_config.json "
                   "`features`)")
            raise ModelLoadError(file, f"the model needs input field(s) {', '.join(missing)}, "
                                       f"which neither the comment nor {via} provides")
        # Warm the JIT at load, before real traffic (at most WARMUP_MAX_S), on rows that
        # differ so that the trees' branches are all taken.
        requests = [{**PROBE_REQUEST, "reviewBody": PROBE_REQUEST["baseSkuName"][:i % 9] * (i % 5)
                     + "物流很快" * (i % 3)} for i in range(WARMUP_BATCH)]
        warm = self.preprocess({k: [r[k] for r in requests] for k in PROBE_REQUEST}, None)
        deadline = time.monotonic() + WARMUP_MAX_S
        for _ in range(WARMUP_ROWS // WARMUP_BATCH):
            self.process(warm, None)
            if time.monotonic() > deadline:
                break

    def _row(self, request: dict[str, Any]) -> dict[str, Any]:
        row = input_row(request, self.features)
        return {name: row.get(name) for name in self.needed}

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> PmmlBatch:
        count = len(reqDict["input"])
        batch = PmmlBatch([], [])
        for i in range(count):
            request = {key: values[i] for key, values in reqDict.items()}
            try:
                batch.rows.append(self._row(request))
                batch.errors.append(None)
            except Exception as exc:  # the team's feature code: its error is the row's
                batch.rows.append({})
                batch.errors.append(f"feature function {self.features_spec} failed: "
                                    f"{type(exc).__name__}: {exc}")
        return batch

    def process(self, preprocessed: PmmlBatch, modelSpec: Any) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError("initialize() was not called")
        todo = [i for i, error in enumerate(preprocessed.errors) if error is None]
        scored = self.model.evaluate([preprocessed.rows[i] for i in todo])
        scores: list[float] = [0.0] * len(preprocessed.rows)
        errors = list(preprocessed.errors)
        outputs: list[dict[str, Any] | None] = [None] * len(preprocessed.rows)
        for i, outcome in zip(todo, scored, strict=True):
            if outcome.error is not None:
                errors[i] = f"the PMML evaluator rejected this comment: {outcome.error}"
            else:
                scores[i] = outcome.score if outcome.score is not None else 0.0
                outputs[i] = outcome.outputs
        return {"result": scores, "errors": errors, "outputs": outputs}
