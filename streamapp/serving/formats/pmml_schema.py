"""PMML 4.3 and 4.4: what a file uses that 4.3 lacks, and a 4.3 copy when it uses none.

The lists are the DMG schema's additions from pmml-4-3.xsd to pmml-4-4.xsd, as JPMML-Model
(generated from the DMG schemas) marks them `@Added(PMML_4_4)`; tests/test_pmml.py holds
them equal to the annotations of the jar that ships. Built-in functions are no schema matter
(`Apply@function` is a string in both schemas): those new in 4.4 come from the DMG's 4.4
"Built-in Functions" page. Attributes named `x-...` are PMML extension attributes, allowed
in every 4.x version (JPMML writes `x-mathContext`); they are kept and reported.

One 4.4 addition is often inert: `Segmentation@missingPredictionTreatment` (and
`missingThreshold`) say what to do when a segment predicts a missing value. jpmml-xgboost
writes it on every XGBoost model, whose trees always score (a scoring root that always
matches, falling back to the last node that matched) and whose chain's last link reads only
their outputs: no segment can predict a missing value, so the attribute changes nothing and
a 4.3 copy leaves it out. Anything not shown inert this way is refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

NAMESPACE = re.compile(r"^\{http://www\.dmg\.org/PMML-(\d)_(\d)\}")

ELEMENTS_4_4 = frozenset((
    "AnomalyDetectionModel", "MeanClusterDistances", "VariableWeight",
    # time series: ARIMA's new parts, state space models, GARCH
    "AR", "ARMAPart", "Denominator", "DynamicRegressor", "FinalNoise", "FinalNu", "FinalOmega",
    "FinalPredictedNoise", "FinalStateVector", "FinalTheta", "GARCH", "GARCHPart", "HVector",
    "InterceptVector", "KalmanState", "MA", "MACoefficients", "MaximumLikelihoodStat",
    "MeasurementMatrix", "NonseasonalComponent", "NonseasonalFactor", "Numerator",
    "ObservationVarianceMatrix", "OutlierEffect", "PastVariances",
    "PredictedStateCovarianceMatrix", "PsiVector", "RegressorValues",
    "ResidualSquareCoefficients", "Residuals", "SeasonalComponent", "SeasonalFactor",
    "SelectedStateCovarianceMatrix", "StateSpaceModel", "StateVector", "Theta",
    "ThetaRecursionState", "TransferFunctionValues", "TransitionMatrix", "TrendCoefficients",
    "VarianceCoefficients",
))
# element -> attributes it gained in 4.4
ATTRIBUTES_4_4: dict[str, frozenset[str]] = {
    "ARIMA": frozenset(("RMSE", "constantTerm", "predictionMethod", "transformation")),
    "BayesianNetworkModel": frozenset(("inferenceMethod", "modelType")),
    "Constant": frozenset(("missing",)),
    "GaussianProcessModel": frozenset(("algorithmName",)),
    "Lag": frozenset(("aggregate",)),
    "MiningField": frozenset(("invalidValueReplacement",)),
    "ParameterField": frozenset(("displayName",)),
    "PredictiveModelQuality": frozenset(("AUC", "F1", "F2", "Fhalf", "accuracy", "precision",
                                         "recall", "specificity")),
    "Segmentation": frozenset(("missingPredictionTreatment", "missingThreshold")),
    "TimeSeries": frozenset(("field",)),
}
# (element, attribute) -> values new in 4.4
VALUES_4_4: dict[tuple[str, str], frozenset[str]] = {
    ("MiningField", "invalidValueTreatment"): frozenset(("asValue",)),
    ("MiningField", "missingValueTreatment"): frozenset(("returnInvalid",)),
    ("OutputField", "feature"): frozenset(("standardDeviation",)),
}
# parent -> children it may hold only from 4.4 (beyond the new elements above)
CHILDREN_4_4: dict[str, frozenset[str]] = {
    "ARIMA": frozenset(("Extension",)),
    "BlockIndicator": frozenset(("Extension",)),
    "ClusteringModelQuality": frozenset(("Extension",)),
    "OutputField": frozenset(("Value",)),
}
FUNCTIONS_4_4 = frozenset((
    "modulo", "isValid", "isNotValid", "expm1", "hypot", "ln1p", "rint",
    "sin", "asin", "sinh", "cos", "acos", "cosh", "tan", "atan", "tanh",
))
MODEL_ELEMENTS = frozenset((
    "AnomalyDetectionModel", "AssociationModel", "BayesianNetworkModel", "BaselineModel",
    "ClusteringModel", "GaussianProcessModel", "GeneralRegressionModel", "MiningModel",
    "NaiveBayesModel", "NearestNeighborModel", "NeuralNetwork", "RegressionModel",
    "RuleSetModel", "SequenceModel", "Scorecard", "SupportVectorMachineModel", "TextModel",
    "TimeSeriesModel", "TreeModel",
))


# 4.4 attributes that say what to do when a segment predicts a missing value: inert where no
# segment can (see `_never_missing`), so a 4.3 copy may leave them out.
INERT_WHEN_NOTHING_MISSING = frozenset(("missingPredictionTreatment", "missingThreshold"))
TREE_STRATEGIES_THAT_SCORE = frozenset(("none", "lastPrediction"))


class PmmlFormatError(ValueError):
    """The file is no PMML document."""


@dataclass
class PmmlInspection:
    """What a PMML file is, read from its XML alone (no evaluator)."""

    version: str
    namespace_version: str
    model_types: list[str]
    uses_4_4: list[str] = field(default_factory=list)  # what 4.3 lacks, one line each
    inert_4_4: list[str] = field(default_factory=list)  # 4.4 markup that changes nothing here
    extensions: list[str] = field(default_factory=list)  # x-... attributes (kept)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _always_true(segment: ET.Element) -> bool:
    return _child(segment, "True") is not None


def _tree_always_scores(tree: ET.Element) -> bool:
    """A TreeModel whose root scores and always matches, that falls back to the last node
    that matched (no true child, or a missing value): it never predicts a missing value."""
    root = _child(tree, "Node")
    return (tree.get("noTrueChildStrategy") == "returnLastPrediction"
            and tree.get("missingValueStrategy", "none") in TREE_STRATEGIES_THAT_SCORE
            and root is not None and root.get("score") is not None and _always_true(root))


def _outputs(model: ET.Element) -> set[str]:
    output = _child(model, "Output")
    return {f.get("name", "") for f in output} if output is not None else set()


def _active_inputs(model: ET.Element) -> set[str]:
    schema = _child(model, "MiningSchema")
    return {f.get("name", "") for f in (schema if schema is not None else [])
            if f.get("usageType", "active") == "active"}


def _never_missing(model: ET.Element, known: set[str]) -> bool:
    """Whether `model` always predicts a value, given that the fields `known` are never
    missing. Conservative: anything not shown safe is not."""
    name = _local(model.tag)
    if name == "TreeModel":
        return _tree_always_scores(model)
    if name == "RegressionModel":  # a chain's link over earlier segments' outputs
        return _active_inputs(model) <= known
    if name == "MiningModel":
        segmentation = _child(model, "Segmentation")
        return segmentation is not None and _segments_never_missing(segmentation, known)
    return False


def _segments_never_missing(segmentation: ET.Element, known: set[str]) -> bool:
    chained = segmentation.get("multipleModelMethod") == "modelChain"
    known = set(known)
    for segment in segmentation:
        if _local(segment.tag) != "Segment":
            continue
        models = [c for c in segment if _local(c.tag) in MODEL_ELEMENTS]
        if not _always_true(segment) or len(models) != 1:
            return False
        if not _never_missing(models[0], known):
            return False
        if chained:
            known |= _outputs(models[0])
    return True


def inspect_pmml(path: Path) -> PmmlInspection:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise PmmlFormatError(f"{path}: not readable as XML ({exc})") from exc
    found = NAMESPACE.match(root.tag)
    if _local(root.tag) != "PMML" or found is None:
        raise PmmlFormatError(f"{path}: the root element is {root.tag}, not a DMG <PMML>")
    report = PmmlInspection(version=root.get("version", "?"),
                            namespace_version=f"{found.group(1)}.{found.group(2)}",
                            model_types=[_local(c.tag) for c in root
                                         if _local(c.tag) in MODEL_ELEMENTS])
    uses: dict[str, int] = {}
    inert: dict[str, int] = {}
    extensions: set[str] = set()

    def note(what: str, found: dict[str, int] = uses) -> None:
        found[what] = found.get(what, 0) + 1

    for parent in root.iter():
        name = _local(parent.tag)
        if name in ELEMENTS_4_4:
            note(f"element {name}")
        for attribute, value in parent.attrib.items():
            if attribute.startswith("x-"):
                extensions.add(f"{name}@{attribute}")
            elif (name == "Segmentation" and attribute in INERT_WHEN_NOTHING_MISSING
                  and _segments_never_missing(parent, set())):
                note(f"attribute {name}@{attribute}", inert)
            elif attribute in ATTRIBUTES_4_4.get(name, ()):
                note(f"attribute {name}@{attribute}")
            elif value in VALUES_4_4.get((name, attribute), ()):
                note(f"value {name}@{attribute}={value!r}")
            elif name == "Apply" and attribute == "function" and value in FUNCTIONS_4_4:
                note(f"function {value!r} (Apply@function)")
        for child in parent:
            if _local(child.tag) in CHILDREN_4_4.get(name, ()):
                note(f"child {name}/{_local(child.tag)}")
    report.uses_4_4 = [f"{what} ({count}x)" for what, count in sorted(uses.items())]
    report.inert_4_4 = [f"{what} ({count}x)" for what, count in sorted(inert.items())]
    report.extensions = sorted(extensions)
    return report


ROOT_TAG = re.compile(r"<PMML\b[^>]*>")
INERT_ATTRIBUTE = re.compile(r'(<Segmentation\b[^>]*?)\s+(?:missingPredictionTreatment|'
                             r'missingThreshold)="[^"]*"')


def to_pmml_4_3(source: Path, target: Path) -> PmmlInspection:
    """Write `source` as PMML 4.3 (namespace and version on the root element, inert 4.4
    attributes left out), or raise ValueError naming what 4.3 lacks. The rest of the file is
    copied byte for byte."""
    report = inspect_pmml(source)
    if report.uses_4_4:
        raise ValueError(f"{source} uses what PMML 4.3 lacks: {'; '.join(report.uses_4_4)}")
    text = source.read_text(encoding="utf-8")
    root = ROOT_TAG.search(text)
    if root is None:
        raise PmmlFormatError(f"{source}: no <PMML> root tag")
    tag = re.sub(r'xmlns="http://www\.dmg\.org/PMML-\d_\d"',
                 'xmlns="http://www.dmg.org/PMML-4_3"', root.group(0))
    tag = re.sub(r'\bversion="[^"]*"', 'version="4.3"', tag)
    text = text[:root.start()] + tag + text[root.end():]
    if report.inert_4_4:  # every Segmentation that has them was found inert, or we refused
        while INERT_ATTRIBUTE.search(text):
            text = INERT_ATTRIBUTE.sub(r"\1", text)
    target.write_text(text, encoding="utf-8")
    return report
