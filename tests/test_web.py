"""The web view: /api/stats, /api/cluster, /metrics and /dashboard/ in a real headless Chromium.

The browser is Debian's `chromium`, driven through Debian's `chromedriver` by selenium; the
`chromium` fixture installs both with apt-get when they are missing (never a browser download).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamapp.broker import HOST, EmbeddedBroker
from streamapp.decoding import encode_delimited
from streamapp.pipeline.stats import (
    LATENCY_BOUNDS_MS,
    BatchReport,
    Histogram,
    Interval,
    WorkerStats,
)
from streamapp.processes import WorkerProcess
from streamapp.web.metrics import LATENCY_BUCKETS, PrometheusMetrics, observe_all
from streamapp.web.views import merge_stats
from tests.conftest import StartWorker, collect_outputs, comma_rows, demo_rows, send, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_PACKAGES = ("chromium", "chromium-driver", "fonts-noto-cjk")  # CJK: the category names
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
BROKEN = [b"{not json", b"", b"[1, 2]"]
BROKEN_REASONS = Counter({"invalid_json": 1, "empty_value": 1, "not_an_object": 1})


# -- helpers ------------------------------------------------------------------------------------

def get(worker: WorkerProcess, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{HOST}:{worker.web_port}{path}", timeout=10) as answer:
        return bytes(answer.read())


def get_json(worker: WorkerProcess, path: str) -> dict[str, Any]:
    return dict(json.loads(get(worker, path)))


def report(size: int, *, queue_ms: list[float] | None = None, tokens: int = 0,
           padded_tokens: int = 0, process_s: float = 0.01) -> BatchReport:
    queue_ms = queue_ms if queue_ms is not None else [10.0] * size
    return BatchReport(
        finished_at=time.time(), size=size, predicted=size, matched=size // 2, failed=0,
        model_name="m", model_version="1", queue_ms=queue_ms,
        end_to_end_ms=[ms + 5 for ms in queue_ms], preprocess_s=0.002, process_s=process_s,
        batch_s=process_s, tokens=tokens, padded_tokens=padded_tokens,
        counts=[("category:生鲜", {"seen": size, "predicted": size, "matched": size // 2}),
                ("path:生鲜/水果", {"seen": size, "predicted": size, "matched": size // 2})])


# -- the browser --------------------------------------------------------------------------------

def _missing_packages() -> list[str]:
    missing = []
    for package in APT_PACKAGES:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                capture_output=True, text=True, check=False).stdout
        if "install ok installed" not in status:
            missing.append(package)
    return missing


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium and chromedriver (and CJK fonts), installed when missing."""
    missing = _missing_packages() if shutil.which("dpkg-query") else []
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"needs Debian packages {missing}: apt-get install -y {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "chromium / chromedriver not found"
    return CHROMIUM


@pytest.fixture
def browser(chromium: Path, tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(chromium)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_dashboard(driver: Any, worker: WorkerProcess) -> None:
    """Load /dashboard/ and wait for a render of the numbers as they are now."""
    driver.get(f"http://{HOST}:{worker.web_port}/dashboard/?refresh=1")
    first = time.time()
    wait_until(lambda: float(driver.execute_script(
        "return document.body.dataset.generatedAt || 0")) > first, 30, "the dashboard to render")


def attr(driver: Any, selector: str, name: str = "data-value") -> list[str]:
    return [str(v) for v in driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(e => e.getAttribute(arguments[1]))", selector, name)]


def click(driver: Any, selector: str) -> None:
    """Click the element; again when the page re-rendered it in between (?refresh=1 redraws
    the tables every second, and a row found before a redraw is stale by the click)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for attempt in range(5):
        try:
            driver.find_element("css selector", selector).click()
            return
        except StaleElementReferenceException:
            if attempt == 4:
                raise


def number(text: str) -> float | None:
    return None if text == "" else float(text)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, path: Path) -> None:
    """The whole page: the window made as tall as the document."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1400, min(height + 20, 6000))
    driver.save_screenshot(str(path))


def check_page_against(driver: Any, stats: dict[str, Any]) -> None:
    """What the page draws equals what /api/stats says (both read after the run settled)."""
    totals = stats["totals"]
    for key in ("seen", "predicted", "matched", "dead_letters", "recovered"):
        assert attr(driver, f'[data-kpi="{key}"]') == [str(totals[key])], key
    for name, entry in stats["categories"].items():
        row = f'#table-categories tr[data-category="{name}"]'
        assert attr(driver, f'{row} td[data-field="seen"]') == [str(entry["seen"])]
        assert attr(driver, f'{row} td[data-field="matched"]') == [str(entry["matched"])]
        # The chart's line: the same per-minute counts, minute by minute.
        drawn = attr(driver, f'#chart-throughput polyline[data-series="{name}"]', "data-values")
        minutes = attr(driver, "#chart-throughput svg", "data-minutes")[0].split(",")
        by_minute = dict(zip(map(int, minutes), map(int, drawn[0].split(",")), strict=True))
        expected = dict(zip(stats["minutes"], entry["per_minute"], strict=True))
        assert {m: n for m, n in by_minute.items() if n} == {m: n for m, n in expected.items()
                                                            if n and m in by_minute}
        assert sum(by_minute.values()) == entry["last_hour"] == entry["seen"]
    for section, chart in (("batch_size", "chart-batch-size"),
                           ("tokens_per_batch", "chart-tokens")):
        drawn_bars = {le: n for le, n in zip(attr(driver, f"#{chart} rect", "data-le"),
                                             map(int, attr(driver, f"#{chart} rect")),
                                             strict=True) if n}
        expected_bars = {("+Inf" if le is None else str(le).removesuffix(".0")): n
                         for le, n in stats["batching"][section]["buckets"]}
        assert drawn_bars == expected_bars, section
    for stage in ("queue_ms", "tokenize_ms", "model_ms", "end_to_end_ms"):
        for q in ("p50", "p95", "p99"):
            bar = f'#chart-latency rect[data-stage="{stage}"][data-quantile="{q}"]'
            drawn_q = attr(driver, bar)
            assert [number(v) for v in drawn_q] == [stats["latency"][stage][q]], (stage, q)
    reasons = dict(zip(attr(driver, "#chart-dead-letters rect", "data-reason"),
                       map(int, attr(driver, "#chart-dead-letters rect")), strict=True))
    assert reasons == stats["dead_letters"]
    assert len(attr(driver, "#table-lag tbody tr", "data-tp")) == len(stats["lag"]["partitions"])
    assert attr(driver, '#model dd[data-model="version"]', "data-model") == ["version"]
    assert driver.find_element("css selector", '#model dd[data-model="version"]').text == \
        stats["model"]["version"]


# -- unit: histograms, merging, metrics -----------------------------------------------------------

def test_histogram_quantiles_are_close_to_the_exact_ones() -> None:
    values = [0.5 + (i * 7919 % 1000) * 1.7 for i in range(1000)]  # 0.5 .. 1700 ms, spread
    hist = Histogram(LATENCY_BOUNDS_MS)
    for v in values:
        hist.observe(v)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[round(q * len(values)) - 1]
        assert hist.quantile(q) == pytest.approx(exact, rel=0.03)
    assert hist.quantile(1.0) == max(values)
    assert Histogram(LATENCY_BOUNDS_MS).quantile(0.5) is None
    # One sample: every quantile is that sample.
    single = Histogram(LATENCY_BOUNDS_MS)
    single.observe(42.0)
    assert single.quantile(0.5) == single.quantile(0.99) == 42.0
    # JSON round trip, and merging two halves gives the whole.
    again = Histogram.from_description(LATENCY_BOUNDS_MS, hist.describe())
    assert again.counts == hist.counts and again.quantile(0.95) == hist.quantile(0.95)
    first, second = Histogram(LATENCY_BOUNDS_MS), Histogram(LATENCY_BOUNDS_MS)
    for i, v in enumerate(values):
        (first if i % 2 else second).observe(v)
    first.merge(second)
    assert first.counts == hist.counts and first.quantile(0.99) == hist.quantile(0.99)
    # A batch's values at once count as one by one.
    at_once = Histogram(LATENCY_BOUNDS_MS)
    at_once.observe_all(values[:600])
    at_once.observe_all([])
    at_once.observe_all(values[600:])
    assert (at_once.counts, at_once.count, at_once.min, at_once.max) == \
        (hist.counts, hist.count, hist.min, hist.max)
    assert at_once.sum == pytest.approx(hist.sum)


def test_prometheus_histogram_observed_at_once_equals_one_by_one() -> None:
    from prometheus_client import Histogram as PrometheusHistogram
    from prometheus_client import generate_latest

    values = [0.0, 1e-5, *LATENCY_BUCKETS[:5], 0.0123, 2.5, 2.5, 9999.0, LATENCY_BUCKETS[-1]]

    def exposition(at_once: bool) -> bytes:
        registry = CollectorRegistry()
        histogram = PrometheusHistogram("t_seconds", "t", buckets=LATENCY_BUCKETS,
                                        registry=registry)
        if at_once:
            observe_all(histogram, values[:4])
            observe_all(histogram, [])
            observe_all(histogram, values[4:])
        else:
            for value in values:
                histogram.observe(value)
        return b"\n".join(line for line in generate_latest(registry).splitlines()
                          if not line.startswith(b"t_seconds_created"))

    assert exposition(True) == exposition(False)
    assert b't_seconds_bucket{le="+Inf"} 12.0' in exposition(True)


def test_worker_stats_window_batching_and_latency() -> None:
    stats = WorkerStats()
    stats.on_batch(report(8, queue_ms=[100.0] * 8, tokens=300, padded_tokens=400))
    stats.on_batch(report(32, queue_ms=[1000.0] * 32, tokens=900, padded_tokens=1000))
    stats.on_dead_letter("comments:0:1", "invalid_json", "not JSON " * 100)
    window, span = stats.window()
    described = window.describe(span)
    batching, latency = described["batching"], described["latency"]
    assert batching["batches"] == 2 and batching["records"] == 40
    assert batching["dead_letters"] == 1
    assert batching["padding_fraction"] == pytest.approx(1 - 1200 / 1400, abs=1e-4)
    assert batching["mean_batch_size"] == 20.0
    assert batching["batch_size"]["buckets"] == [[8.0, 1], [32.0, 1]]
    assert batching["tokens_per_batch"]["buckets"] == [[512.0, 1], [1024.0, 1]]
    assert latency["queue_ms"]["count"] == 40
    assert latency["queue_ms"]["p50"] == pytest.approx(1000.0, rel=0.03)
    assert latency["queue_ms"]["min"] == 100.0
    assert latency["end_to_end_ms"]["max"] == 1005.0
    assert latency["model_ms"]["count"] == 2
    latest = list(stats.latest_dead_letters)
    assert latest[0]["reason"] == "invalid_json" and len(latest[0]["error"]) == 500
    # The window forgets minutes older than WINDOW_MINUTES.
    stats.minutes = {minute - 60: interval for minute, interval in stats.minutes.items()}
    assert stats.window()[0].counters["batches"] == 0


def _worker_stats(url: str, minutes: list[int], seen: int, batch: int) -> dict[str, Any]:
    """A worker's /api/stats as merge_stats reads it."""
    stats = WorkerStats()
    stats.on_batch(report(batch, queue_ms=[float(batch)] * batch))
    window, span = stats.window()
    entry = {"seen": seen, "predicted": seen, "matched": 1, "failed": 0,
             "last_minute": {"seen": 1, "predicted": 1, "matched": 0, "failed": 0},
             "per_minute": [0] * (len(minutes) - 1) + [seen]}
    return {"app_id": "streamapp", "worker": url, "generated_at": 1.0,
            "assigned_partitions": [f"streamapp-inference:{batch}"], "model": None,
            "agents": stats.snapshot(), **window.describe(span), "minutes": minutes,
            "categories": {"生鲜": entry}, "category_paths": {"生鲜/水果": entry},
            "dead_letters": {"invalid_json": 1}, "dead_letters_latest": [],
            "recovered": {"separator_in_review": batch},
            "lag": {"total": 2, "partitions": [{"topic": "t", "partition": batch, "lag": 2}]}}


def test_merge_stats_adds_workers_up() -> None:
    minutes = [60 * m for m in range(1000, 1060)]
    shifted = [m + 60 for m in minutes]  # the second worker answered in the next minute
    merged = merge_stats([_worker_stats("a", minutes, 5, 4), _worker_stats("b", shifted, 7, 16)])
    fresh = merged["categories"]["生鲜"]
    assert fresh["seen"] == 12 and fresh["matched"] == 2
    assert fresh["per_minute"][-1] == 5, "minutes are aligned on their start times"
    assert fresh["last_minute"]["seen"] == 2
    assert merged["totals"]["seen"] == 12 and merged["totals"]["dead_letters"] == 2
    assert merged["dead_letters"] == {"invalid_json": 2}
    assert merged["recovered"] == {"separator_in_review": 20}
    assert merged["totals"]["recovered"] == 20
    assert merged["agents"]["records"] == 20 and merged["agents"]["batches"] == 2
    assert merged["batching"]["batch_size"]["buckets"] == [[4.0, 1], [16.0, 1]]
    assert merged["latency"]["queue_ms"]["count"] == 20
    assert merged["latency"]["queue_ms"]["p50"] == pytest.approx(16.0, rel=0.03)
    assert merged["lag"]["total"] == 4
    assert {p["worker"] for p in merged["lag"]["partitions"]} == {"a", "b"}


def test_prometheus_metrics_from_batch_reports() -> None:
    registry = CollectorRegistry()
    stats = WorkerStats(listeners=[PrometheusMetrics(registry)])
    batch = report(10, tokens=100, padded_tokens=160)
    stats.on_batch(replace(batch, counts=[*batch.counts,
                                          ("recovered:separator_in_review", {"seen": 3})]))
    stats.on_dead_letter("comments:0:1", "too_large", "too long")
    assert stats.snapshot()["recovered"] == 3
    from prometheus_client import generate_latest

    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry)
                                                                  .decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("streamapp_batch_size_count", ())] == 1
    assert samples[("streamapp_queue_wait_seconds_sum", ())] == pytest.approx(0.1)
    assert samples[("streamapp_records_total", (("category", "生鲜"), ("outcome", "matched")))] \
        == 5
    assert samples[("streamapp_records_total",
                    (("category", "生鲜"), ("outcome", "not_matched")))] == 5
    assert samples[("streamapp_tokens_total", (("kind", "padding"),))] == 60
    assert samples[("streamapp_dead_letters_total", (("reason", "too_large"),))] == 1
    assert samples[("streamapp_recovered_total", (("kind", "separator_in_review"),))] == 3


def test_faust_sensor_keeps_faust_prometheus_sensors_metrics_and_values() -> None:
    """FaustSensor looks its labelled children up once; the metrics are Faust's own."""
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
    from prometheus_client import generate_latest

    from bench.sensor import feed, probe_streams
    from streamapp.web.metrics import FaustSensor

    streams = probe_streams(2)

    def samples(monitor_class: type[PrometheusMonitor]) -> dict[tuple[Any, ...], float]:
        registry = CollectorRegistry()
        monitor = monitor_class(metrics=FaustMetrics.create(registry, "faust"))
        feed(monitor, streams, 30, partitions=3, unacked_every=5)
        text = generate_latest(registry).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples
                if not any(t in s.name for t in ("runtime", "latency", "created"))}  # times

    faust_samples = samples(PrometheusMonitor)
    assert samples(FaustSensor) == faust_samples
    assert faust_samples[("faust_messages_received_per_topics_partition",
                          (("partition", "1"), ("topic", "comments")))] == 28
    assert faust_samples[("faust_active_messages", ())] == 6
    assert len([k for k in faust_samples if k[0].startswith("faust_total_events_per_stream")
                and not k[0].endswith("_created")]) == 2  # one child per stream


def test_interval_description_round_trip() -> None:
    interval = Interval()
    interval.add_batch(report(3, tokens=20, padded_tokens=30))
    again = Interval.from_description(interval.describe(60.0))
    assert again.describe(60.0) == interval.describe(60.0)


# -- integration: a real worker, a real browser -------------------------------------------------

def _settled(worker: WorkerProcess, valid: int, broken: int) -> bool:
    stats = worker.stats()
    return stats["totals"]["seen"] == valid and stats["totals"]["dead_letters"] == broken


@pytest.mark.integration
def test_dashboard_api_and_metrics_show_a_running_worker(
    broker: EmbeddedBroker, start_worker: StartWorker, browser: Any, tmp_path: Path
) -> None:
    worker = start_worker()
    rows = demo_rows(240, seed=21)
    commas = comma_rows(6, seed=23)  # delimited, a comma in the review: rejoined, recovered
    ids = send(broker, [orjson.dumps(r) for r in rows] + BROKEN
               + [encode_delimited(r).encode() for r in commas])
    rows += commas
    outputs = collect_outputs(broker.url, ["sku-matches", "comments-dlq"], set(ids), settle=0.5)
    assert set(outputs) == set(ids)
    wait_until(lambda: _settled(worker, len(rows), len(BROKEN)), 30, "the tables to count all")
    wait_until(lambda: worker.stats()["totals"]["recovered"] == 6, 30, "the recovered count")

    # /api/stats: the old keys, and the new ones holding the run's real numbers.
    stats = get_json(worker, "/api/stats")
    assert get_json(worker, "/api/stats/")["totals"] == stats["totals"]
    expected = Counter(str(r["categoryFirstName"]) for r in rows)
    assert {name: e["seen"] for name, e in stats["categories"].items()} == expected
    assert stats["dead_letters"] == BROKEN_REASONS
    assert stats["recovered"] == {"separator_in_review": 6}
    assert {d["reason"] for d in stats["dead_letters_latest"]} == set(BROKEN_REASONS)
    agents, batching, latency = stats["agents"], stats["batching"], stats["latency"]
    assert agents["records"] == batching["records"] == len(rows)
    assert batching["batch_size"]["count"] == agents["batches"] == batching["batches"]
    assert sum(n for _, n in batching["batch_size"]["buckets"]) == agents["batches"]
    assert 0 <= batching["padding_fraction"] < 1
    assert latency["end_to_end_ms"]["count"] == latency["queue_ms"]["count"] == len(rows)
    for stage in ("queue_ms", "tokenize_ms", "model_ms", "end_to_end_ms"):
        s = latency[stage]
        assert 0 <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"], stage
    assert latency["end_to_end_ms"]["p50"] >= latency["queue_ms"]["p50"]
    # The lag is at most LAG_INTERVAL_S old: one taken during a rebalance (Faust's own, as
    # the output topics appear) lists no partitions; the next covers every one held.
    def lag_covers_inference() -> bool:
        now = worker.stats()
        inference_tps = {p for p in now["assigned_partitions"]
                         if p.startswith("streamapp-inference:")}
        listed = {f"{p['topic']}:{p['partition']}" for p in now["lag"]["partitions"]}
        return bool(inference_tps) and inference_tps <= listed

    wait_until(lag_covers_inference, 30, "the lag to cover the inference partitions")
    # Everything read and committed: the comment partitions' end offsets add up to what was
    # sent (the fetch high watermark is exact, whatever ListOffsets answers), lag 0 on every
    # partition (the inference and stats topics' commits may trail the comments' by a commit
    # interval: a run of the suite beside other load read a total of 4 once they were in).
    def caught_up() -> bool:
        lag = worker.stats()["lag"]
        parts = [p for p in lag["partitions"] if p["topic"] == "comments"]
        return (sum(p["end_offset"] or 0 for p in parts) == len(ids)
                and sum(p["committed"] or 0 for p in parts) == len(ids)
                and lag["total"] == 0)

    wait_until(caught_up, 30, "the lag to show every record read and committed")
    assert "ListOffsets" in stats["lag"]["note"]
    # Only what the worker reads is fetched: its tables' changelogs, read in recovery only,
    # are paused in aiokafka (else every changelog write held the next fetch back 100 ms).
    unread = stats["unread_partitions"]
    assert unread and all("-changelog:" in p for p in unread), unread
    assert set(unread) <= set(stats["assigned_partitions"])
    assert {"name", "version", "device", "dtype", "loaded_at", "reloads",
            "last_reload_error"} <= set(stats["model"])

    # /api/cluster with one worker: the same numbers, and the worker listed.
    cluster = get_json(worker, "/api/cluster")
    assert cluster["totals"] == stats["totals"]
    assert cluster["categories"].keys() == stats["categories"].keys()
    assert [w["url"] for w in cluster["workers"]] == [stats["worker"]]

    # /metrics: Prometheus text with streamapp's histograms and counters, and Faust's own.
    families = {f.name: f for f in text_string_to_metric_families(get(worker, "/metrics")
                                                                  .decode())}
    for name in ("streamapp_batch_size", "streamapp_batch_tokens",
                 "streamapp_queue_wait_seconds", "streamapp_tokenize_seconds",
                 "streamapp_model_compute_seconds", "streamapp_end_to_end_seconds"):
        assert families[name].type == "histogram", name
    count = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
    assert count["streamapp_batch_size_count"] == agents["batches"]
    assert count["streamapp_end_to_end_seconds_count"] == len(rows)
    records = [s for s in families["streamapp_records"].samples if s.name.endswith("_total")]
    assert sum(s.value for s in records) == len(rows)
    dead = {s.labels["reason"]: s.value for s in families["streamapp_dead_letters"].samples
            if s.name.endswith("_total")}
    assert dead == BROKEN_REASONS
    recovered = {s.labels["kind"]: s.value for s in families["streamapp_recovered"].samples
                 if s.name.endswith("_total")}
    assert recovered == {"separator_in_review": 6}
    model_info = families["streamapp_model_info"].samples[0].labels
    assert model_info["version"] == stats["model"]["version"]
    assert any(name.startswith("faust_") for name in families)

    # The page in a real browser: no console errors, and the charts hold the same numbers.
    open_dashboard(browser, worker)
    check_page_against(browser, get_json(worker, "/api/stats"))
    busiest = max(expected, key=lambda name: expected[name])
    click(browser, f'#table-categories tr[data-category="{busiest}"]')
    paths = attr(browser, "#table-paths tr[data-path] td[data-field=seen]")
    assert sum(map(int, paths)) == expected[busiest], "the drill-down's paths add up"
    assert attr(browser, "#chart-paths polyline", "data-series"), "the paths are charted"
    assert console_errors(browser) == []
    screenshot(browser, tmp_path / "dashboard.png")
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # refresh the README's picture on request
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "dashboard.png", SCREENSHOT)


@pytest.mark.integration
@pytest.mark.slow
def test_cluster_view_counts_every_comment_once(
    broker: EmbeddedBroker, start_worker: StartWorker, browser: Any
) -> None:
    workers = [start_worker(), start_worker()]
    wait_until(lambda: all(
        any(p.startswith("streamapp-inference:") for p in w.stats()["assigned_partitions"])
        for w in workers), 60, "both workers to hold inference partitions")
    rows = demo_rows(300, seed=22)
    ids = send(broker, [orjson.dumps(r) for r in rows] + BROKEN)
    collect_outputs(broker.url, ["sku-matches", "comments-dlq"], set(ids), settle=0.5)
    expected = Counter(str(r["categoryFirstName"]) for r in rows)

    def cluster_settled() -> bool:
        cluster = get_json(workers[0], "/api/cluster")
        return (cluster["totals"]["seen"] == len(rows)
                and cluster["totals"]["dead_letters"] == len(BROKEN))

    wait_until(cluster_settled, 30, "the cluster view to count every comment")
    for worker in workers:  # either worker gives the whole cluster, every comment once
        cluster = get_json(worker, "/api/cluster")
        assert {n: e["seen"] for n, e in cluster["categories"].items()} == expected
        assert sum(e["last_hour"] for e in cluster["categories"].values()) == len(rows)
        assert cluster["dead_letters"] == BROKEN_REASONS
        assert cluster["agents"]["records"] == len(rows)
        assert cluster["latency"]["end_to_end_ms"]["count"] == len(rows)
        listed = cluster["workers"]
        assert len(listed) == 2 and all(w["ok"] for w in listed)
        held = [set(w["assigned_partitions"]) for w in listed]
        assert not held[0] & held[1], "a partition is held by both workers"
        assert all(w["records"] > 0 for w in listed), "both workers predicted comments"
    alone = [w.stats()["totals"]["seen"] for w in workers]
    assert sum(alone) == len(rows) and all(0 < n < len(rows) for n in alone)

    open_dashboard(browser, workers[1])
    assert attr(browser, '[data-kpi="seen"]') == [str(len(rows))]
    assert len(attr(browser, "#table-workers tbody tr", "data-worker")) == 2
    assert console_errors(browser) == []
