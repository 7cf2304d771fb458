"""PMML 4.3 and 4.4: what a file uses that 4.3 lacks, and a 4.3 copy when it uses none.

The lists are the DMG schema's additions from pmml-4-3.xsd to pmml-4-4.xsd, as JPMML-Model
(generated from the DMG schemas) marks them `@Added(PMML_4_4)`; tests/test_pmml.py holds
them equal to the annotations of the jar that ships. Built-in functions are no schema matter
(`Apply@function` is a string in both schemas): those new in 4.4 come from the DMG's 4.4
"Built-in Functions" page. Attributes named `x-...` are PMML extension attributes, allowed
in every 4.x version (JPMML writes `x-mathContext`); they are kept and reported.
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


class PmmlFormatError(ValueError):
    """The file is no PMML document."""


@dataclass
class PmmlInspection:
    """What a PMML file is, read from its XML alone (no evaluator)."""

    version: str
    namespace_version: str
    model_types: list[str]
    uses_4_4: list[str] = field(default_factory=list)  # what 4.3 lacks, one line each
    extensions: list[str] = field(default_factory=list)  # x-... attributes (kept)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


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
    extensions: set[str] = set()

    def note(what: str) -> None:
        uses[what] = uses.get(what, 0) + 1

    for parent in root.iter():
        name = _local(parent.tag)
        if name in ELEMENTS_4_4:
            note(f"element {name}")
        for attribute, value in parent.attrib.items():
            if attribute.startswith("x-"):
                extensions.add(f"{name}@{attribute}")
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
    report.extensions = sorted(extensions)
    return report


ROOT_TAG = re.compile(r"<PMML\b[^>]*>")


def to_pmml_4_3(source: Path, target: Path) -> PmmlInspection:
    """Write `source` as PMML 4.3 (namespace and version on the root element), or raise
    ValueError naming what 4.3 lacks. The rest of the file is copied byte for byte."""
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
    target.write_text(text[:root.start()] + tag + text[root.end():], encoding="utf-8")
    return report
