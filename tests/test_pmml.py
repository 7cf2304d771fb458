"""PMML models: the evaluator seam, 4.3 and 4.4, the check command, and PMML served by real
workers beside BERT (hot-swapped both ways)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.cli import main
from streamapp.demo import pmml_features
from streamapp.demo.pmml_model import PMML_FILE, build_pmml_demo_model
from streamapp.records import Comment, Reason, SkuMatchResult
from streamapp.serving.formats.huggingface import ModelLoadError
from streamapp.serving.formats.pmml import PmmlModel, load_pmml
from streamapp.serving.formats.pmml_schema import (
    ATTRIBUTES_4_4,
    CHILDREN_4_4,
    ELEMENTS_4_4,
    VALUES_4_4,
    inspect_pmml,
    to_pmml_4_3,
)
from streamapp.serving.handlers.pmml import PmmlInfer, input_row
from streamapp.serving.repository import DeployConfig, read_deploy_config
from tests.conftest import (
    StartWorker,
    collect_outputs,
    demo_rows,
    run_failing_worker,
    send,
    wait_until,
)
from tests.handlers.pmml_bad_features import BAD_MARKER
from tests.model_builders import hf_version

RESULTS, DLQ = "sku-matches", "comments-dlq"
SCORE_FIELD = "probability(1)"


@pytest.fixture(scope="session")
def pmml_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo PMML model, small, as the converter writes it in 4.4 and in 4.3."""
    root = tmp_path_factory.mktemp("pmml")
    return {version: Path(build_pmml_demo_model(root / version, train_size=2000, test_size=200,
                                                trees=20, pmml_version=version, log=None).path)
            for version in ("4.4", "4.3")}


def rows_of(comments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [input_row(c, pmml_features.features) for c in comments]


def header_as(source: Path, target: Path, version: str) -> Path:
    """What the seed's notes did by hand: the same file with another version's header."""
    text = source.read_text(encoding="utf-8")
    old = inspect_pmml(source).version
    text = text.replace(f'PMML-{old.replace(".", "_")}"', f'PMML-{version.replace(".", "_")}"', 1)
    text = text.replace(f'version="{old}"', f'version="{version}"', 1)
    target.write_text(text, encoding="utf-8")
    return target


def scores(model: PmmlModel, rows: list[dict[str, Any]]) -> list[float | None]:
    return [o.score for o in model.evaluate(rows)]


# --- the evaluator seam ------------------------------------------------------------------


def test_a_4_4_model_and_its_4_3_twins_give_the_same_scores(pmml_dirs: dict[str, Path],
                                                             tmp_path: Path) -> None:
    rows = rows_of(demo_rows(300, seed=31))
    v44 = load_pmml(pmml_dirs["4.4"] / PMML_FILE)
    relabelled = load_pmml(header_as(pmml_dirs["4.4"] / PMML_FILE, tmp_path / "43.pmml", "4.3"))
    native43 = load_pmml(pmml_dirs["4.3"] / PMML_FILE)
    expected = scores(v44, rows)
    assert None not in expected and len(set(expected)) > 10
    assert scores(relabelled, rows) == expected
    # The converter's own 4.3 drops x-mathContext="float": double instead of float arithmetic.
    assert scores(native43, rows) == pytest.approx(expected, abs=1e-6)


def test_the_seam_scores_as_jpmmls_own_api_and_a_rejected_row_is_that_rows_error(
    pmml_dirs: dict[str, Path]
) -> None:
    model = load_pmml(pmml_dirs["4.4"] / PMML_FILE)
    rows = rows_of(demo_rows(40, seed=32))
    rows[7] = {**rows[7], "review_chars": "many"}
    batched = model.evaluate(rows)
    assert [o.error is None for o in batched] == [i != 7 for i in range(40)]
    assert "review_chars" in str(batched[7].error) and "many" in str(batched[7].error)
    # The reference: jpmml-evaluator's own Python API on the same file, row by row.
    from jpmml_evaluator import JavaError, make_evaluator

    library = make_evaluator(str(model.path), backend="jpype").verify()
    with pytest.raises(JavaError, match="review_chars"):
        library.evaluate(rows[7])
    for i, outcome in enumerate(batched):
        if i != 7:
            assert outcome.score == library.evaluate(rows[i])[SCORE_FIELD]
    assert batched[0].outputs[SCORE_FIELD] == batched[0].score
    assert set(batched[0].outputs) == {"match", "probability(0)", SCORE_FIELD}


def test_a_broken_file_and_a_missing_input_are_load_errors_that_say_which(
    pmml_dirs: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pmml"
    broken.write_text((pmml_dirs["4.4"] / PMML_FILE).read_text()[:5000])
    with pytest.raises(ModelLoadError, match="refused"):
        load_pmml(broken)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(pmml_dirs["4.4"] / PMML_FILE, bare / PMML_FILE)  # no feature function
    with pytest.raises(ModelLoadError, match="char_overlap") as missing:
        PmmlInfer().load(bare / PMML_FILE)
    assert "STREAMAPP_PMML_FEATURES" in str(missing.value)
    with pytest.raises(ModelLoadError, match="probability of target value 'yes'"):
        PmmlInfer(positive="yes").load(pmml_dirs["4.4"] / PMML_FILE)


def test_a_version_is_pmml_by_its_deploy_config_its_one_pmml_file_or_the_setting(
    pmml_dirs: dict[str, Path], tmp_path: Path
) -> None:
    assert read_deploy_config(pmml_dirs["4.4"]) == DeployConfig(
        "pmml", PMML_FILE, features="pmml_features.py:features")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(pmml_dirs["4.4"] / PMML_FILE, bare / "xgb.pmml")
    assert read_deploy_config(bare) == DeployConfig("pmml", "xgb.pmml")
    (bare / "other.pmml").write_text("<PMML/>")  # two files: which one is not guessed
    assert read_deploy_config(bare).model_type == "other"
    assert read_deploy_config(bare, "pmml").model_type == "pmml"
    with pytest.raises(ModelLoadError, match=r"expected one \.pmml file, found 2"):
        PmmlInfer().initialize({"modelNameToPath": {"m": f"{bare}/"}})


def test_the_4_4_lists_are_the_shipped_jpmmls_added_annotations(
    pmml_dirs: dict[str, Path]
) -> None:
    """The 4.4-only lists match JPMML-Model's @Added(PMML_4_4) marks (the DMG schema diff)."""
    import zipfile

    import jpype
    from jpmml_evaluator import _classpath

    load_pmml(pmml_dirs["4.4"] / PMML_FILE)  # the JVM is up
    added = jpype.JClass("org.jpmml.model.annotations.Added")
    root = jpype.JClass("jakarta.xml.bind.annotation.XmlRootElement")
    attribute = jpype.JClass("jakarta.xml.bind.annotation.XmlAttribute")
    element = jpype.JClass("jakarta.xml.bind.annotation.XmlElement")
    enum_value = jpype.JClass("jakarta.xml.bind.annotation.XmlEnumValue")
    [jar] = [p for p in _classpath([]) if Path(p).name.startswith("pmml-model-1")]
    elements, attributes, values, children = set(), set(), set(), set()
    for name in zipfile.ZipFile(jar).namelist():
        if not (name.startswith("org/dmg/pmml/") and name.endswith(".class") and "$" not in name):
            continue
        cls = jpype.JClass(name[:-6].replace("/", ".")).class_
        tag = cls.getAnnotation(root)
        xml_name = str(tag.name()) if tag is not None else str(cls.getSimpleName())
        mark = cls.getAnnotation(added)
        if mark is not None and str(mark.value().name()) == "PMML_4_4":
            elements.add(xml_name)
        for member in cls.getDeclaredFields():
            mark = member.getAnnotation(added)
            if mark is None or str(mark.value().name()) != "PMML_4_4":
                continue
            if member.getAnnotation(attribute) is not None:
                attributes.add((xml_name, str(member.getAnnotation(attribute).name())))
            elif member.getAnnotation(enum_value) is not None:
                values.add((xml_name, str(member.getAnnotation(enum_value).value())))
            elif member.getAnnotation(element) is not None:
                children.add((xml_name, str(member.getAnnotation(element).name())))
    assert elements == ELEMENTS_4_4
    assert attributes == {(e, a) for e, names in ATTRIBUTES_4_4.items() for a in names}
    assert {v for _, v in values} == {v for vs in VALUES_4_4.values() for v in vs}
    assert {(p, c) for p, c in children if c not in ELEMENTS_4_4} == {
        (p, c) for p, cs in CHILDREN_4_4.items() for c in cs}


# --- streamapp pmml check ------------------------------------------------------------------


def check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["pmml", "check", *args])
    return result.exit_code, result.output


def test_check_on_4_4_and_4_3_files(pmml_dirs: dict[str, Path], tmp_path: Path) -> None:
    code, out = check(str(pmml_dirs["4.4"] / PMML_FILE))
    assert code == 0, out
    assert "PMML version: 4.4" in out and "model: MiningModel" in out
    assert "inputs: " in out and "char_overlap (double)" in out and "categoryFirstName" in out
    assert f"outputs: probability(0) (float), {SCORE_FIELD} (float)" in out
    assert "servable: yes" in out and "pmml_features.py:features" in out
    # XGBoost's segments say what a missing prediction does (4.4); none can predict one.
    assert "uses what PMML 4.3 lacks: nothing" in out
    assert "changes nothing here" in out and "Segmentation@missingPredictionTreatment (2x)" in out
    copy = tmp_path / "copy43.pmml"
    code, out = check(str(pmml_dirs["4.4"] / PMML_FILE), "--to", "4.3", "--out", str(copy))
    assert code == 0 and f"wrote {copy}: PMML 4.3" in out, out
    copied = inspect_pmml(copy)
    assert (copied.version, copied.namespace_version) == ("4.3", "4.3")
    assert copied.uses_4_4 == [] and copied.inert_4_4 == []
    assert "missingPredictionTreatment" not in copy.read_text()
    rows = rows_of(demo_rows(200, seed=33))
    assert scores(load_pmml(copy), rows) == scores(load_pmml(pmml_dirs["4.4"] / PMML_FILE), rows)

    # A tree that may predict nothing (no fallback to the last node): the attribute matters.
    text = (pmml_dirs["4.4"] / PMML_FILE).read_text(encoding="utf-8")
    risky = tmp_path / "risky.pmml"
    risky.write_text(text.replace(' noTrueChildStrategy="returnLastPrediction"', "", 1),
                     encoding="utf-8")
    code, out = check(str(risky), "--features", "streamapp.demo.pmml_features:features",
                      "--to", "4.3", "--out", str(tmp_path / "refused.pmml"))
    assert code == 1 and "refused" in out and "Segmentation@missingPredictionTreatment" in out
    assert not (tmp_path / "refused.pmml").exists()

    code, out = check(str(pmml_dirs["4.3"] / PMML_FILE))
    assert code == 0 and "PMML version: 4.3" in out and "servable: yes" in out
    # The converter's own "4.3" keeps the 4.4 attribute (inert here): a header proves nothing.
    assert "Segmentation@missingPredictionTreatment (2x)" in out

    bare = tmp_path / "bare.pmml"
    shutil.copy(pmml_dirs["4.4"] / PMML_FILE, bare)
    code, out = check(str(bare))
    assert code == 1 and "servable: no" in out and "char_overlap" in out
    assert "inputs: " in out  # what the model is, even when it cannot be served
    not_pmml = tmp_path / "not.pmml"
    not_pmml.write_text("<html/>")
    code, out = check(str(not_pmml))
    assert code == 1 and "not a DMG <PMML>" in out


def test_4_4_only_markup_is_named(tmp_path: Path) -> None:
    doc = tmp_path / "uses44.pmml"
    doc.write_text(
        '<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4"><DataDictionary/>'
        '<TreeModel functionName="regression"><MiningSchema>'
        '<MiningField name="x" invalidValueTreatment="asValue" invalidValueReplacement="0"/>'
        '</MiningSchema><Output><OutputField name="sd" feature="standardDeviation"/>'
        '</Output><LocalTransformations><DerivedField name="s" optype="continuous" '
        'dataType="double"><Apply function="sin"><FieldRef field="x"/></Apply></DerivedField>'
        '</LocalTransformations></TreeModel></PMML>')
    with pytest.raises(ValueError) as refused:
        to_pmml_4_3(doc, tmp_path / "out.pmml")
    for named in ("MiningField@invalidValueReplacement", "MiningField@invalidValueTreatment="
                  "'asValue'", "OutputField@feature='standardDeviation'", "function 'sin'"):
        assert named in str(refused.value)


# --- in real workers -----------------------------------------------------------------------


def by_id(ids: list[str], comments: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return dict(zip(ids, comments, strict=True))


@pytest.mark.integration
@pytest.mark.parametrize("version", ["4.4", "4.3"])
def test_a_worker_serves_pmml_with_the_evaluators_own_scores(
    version: str, broker: EmbeddedBroker, start_worker: StartWorker,
    pmml_dirs: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(pmml_dirs[version], root / "1")
    worker = start_worker(model=str(root),
                          pmml_features="tests.handlers.pmml_bad_features:features")
    comments = demo_rows(150, seed=34)
    comments[20] = {**comments[20], "reviewBody": comments[20]["reviewBody"] + BAD_MARKER}
    ids = send(broker, [orjson.dumps(c) for c in comments])
    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids))
    assert set(outputs) == set(ids) and all(len(v) == 1 for v in outputs.values())

    bad_id = ids[20]
    [(topic, letter)] = outputs.pop(bad_id)
    assert topic == DLQ and letter["reason"] == Reason.MODEL_ERROR
    assert "PMML evaluator rejected" in letter["error"] and "review_chars" in letter["error"]
    model = load_pmml(root / "1" / PMML_FILE)
    sent = by_id(ids, comments)
    good = [i for i in ids if i != bad_id]
    expected = scores(model, rows_of([vars(Comment.model_validate(sent[i])) for i in good]))
    for record_id, score in zip(good, expected, strict=True):
        [(topic, value)] = outputs[record_id]
        result = SkuMatchResult.model_validate(value)
        assert topic == RESULTS and result.score == score
        assert result.outputs is not None and result.outputs[SCORE_FIELD] == score
        assert result.match == (score >= 0.5)
    status = worker.stats()["model"]
    assert status["handler"] == "streamapp.serving.handlers.pmml:PmmlInfer"
    assert status["dtype"] == "pmml"


@pytest.mark.integration
def test_a_missing_input_and_a_broken_file_stop_the_worker_with_a_clear_message(
    broker: EmbeddedBroker, pmml_dirs: dict[str, Path], tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(pmml_dirs["4.4"] / PMML_FILE, bare / PMML_FILE)
    env = {"broker": broker.url, "model": str(bare), "web_port": str(free_port()),
           "datadir": str(tmp_path / "data")}
    code, log = run_failing_worker(env, tmp_path)
    assert code != 0 and "Traceback" not in log
    assert "char_overlap" in log and "neither the comment nor" in log

    (bare / PMML_FILE).write_text("<PMML xmlns='http://www.dmg.org/PMML-4_4'><broken")
    code, log = run_failing_worker(env, tmp_path)
    assert code != 0 and "Traceback" not in log
    assert str(bare / PMML_FILE) in log and "refused" in log


@pytest.mark.integration
@pytest.mark.slow
def test_bert_to_pmml_to_bert_under_load_every_comment_once(
    broker: EmbeddedBroker, start_worker: StartWorker, tiny_model: Path,
    pmml_dirs: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    hf_version(tiny_model, root / "1")
    worker = start_worker(model=str(root), reload_interval_s="0.5")
    comments = demo_rows(20_000, seed=35)
    ids: list[str] = []
    stop = threading.Event()

    def stream() -> None:  # about 100 comments a second until both swaps are done
        for start in range(0, len(comments), 10):
            if stop.is_set():
                break
            ids.extend(send(broker, [orjson.dumps(c) for c in comments[start:start + 10]]))
            time.sleep(0.1)

    def serving(version: str) -> bool:
        return bool(worker.stats()["model"]["version"] == version)

    feeder = threading.Thread(target=stream)
    feeder.start()
    try:
        time.sleep(2.0)
        shutil.copytree(pmml_dirs["4.4"], root / "2")
        wait_until(lambda: serving("2"), 120, "the PMML version to swap in")
        time.sleep(2.0)
        hf_version(tiny_model, root / "3")
        wait_until(lambda: serving("3"), 120, "BERT version 3 to swap in")
        time.sleep(2.0)
    finally:
        stop.set()
        feeder.join()
    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids), timeout=120)

    assert set(outputs) == set(ids) and len(set(ids)) == len(ids) > 500
    assert all(len(v) == 1 and v[0][0] == RESULTS for v in outputs.values())
    results = [SkuMatchResult.model_validate(v[0][1]) for v in outputs.values()]
    versions = {r.model.version for r in results}
    assert versions == {"1", "2", "3"}, f"both swaps should happen mid-stream: {versions}"
    assert all((r.outputs is not None) == (r.model.version == "2") for r in results)
    assert all(r.outputs is None or SCORE_FIELD in r.outputs for r in results)
    status = worker.stats()["model"]
    assert status["version"] == "3" and status["reloads"] == 2
    assert status["handler"] == "streamapp.serving.handlers.builtin:SkuMatchInfer"
