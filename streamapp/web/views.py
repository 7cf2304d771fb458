"""The web view on each worker's Faust web server.

- `/dashboard/`: the page (streamapp/static), which polls `/api/cluster`;
- `/api/stats`: this worker's numbers: the per-category counts its tables hold, its batches
  (streamapp.pipeline.stats.WorkerStats, fed by the BatchReports), its consumer lag, its model;
- `/api/cluster`: every worker's `/api/stats` added up (same keys, plus `workers`);
- `/metrics`: Prometheus text (streamapp.web.metrics);
- `/healthz`, `/readyz`: probes for an orchestrator (streamapp.web.health).

Table keys are partitioned: each worker's tables hold the keys of the stats partitions assigned
to it, so the cluster's counts are the sum over the workers and count each comment once. The
workers are the members of the consumer group: Faust's assignor hands every member the web URL
of every other one (the table routing map, `app.router`), and their stats are fetched from there.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from faust.types import TP
from faust.web import Request, Response, View

from streamapp.pipeline.counts import (
    CATEGORY,
    COUNTERS,
    DEAD_LETTER,
    PATH,
    RECOVERED,
    merge_counts,
    split_key,
)
from streamapp.pipeline.fetching import unread_partitions
from streamapp.pipeline.stats import LATEST_DEAD_LETTERS, Interval, merge_snapshots
from streamapp.web import health, metrics

if TYPE_CHECKING:
    from streamapp.application import StreamApp

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
HOUR_MINUTES = 60  # the per-minute table keeps an hour
LAG_INTERVAL_S = 2.0
LAG_TIMEOUT_S = 3.0
PEER_TIMEOUT_S = 5.0  # a peer may spend LAG_TIMEOUT_S on its own lag
LAG_NOTE = (
    "lag = end offset - committed offset (the consumer's position until this worker commits "
    "on the partition). End offset = the larger of ListOffsets(LATEST) and the high watermark "
    "of the consumer's last fetch. The embedded development broker answers ListOffsets(LATEST) "
    "with the last producer batch's base offset + 1, not the high watermark "
    "(list_offsets_end), so there the fetch high watermark is what counts; it is stale while "
    "Faust pauses a partition whose stream buffer is full. At most 2 s old (`at`). On the "
    "inference topic (fan-out) a message holds an ingest batch's comments for its partition: "
    "its lag counts batches, not comments.")

Json = dict[str, Any]


# -- one worker ---------------------------------------------------------------------------------

def _counts(value: dict[str, int] | None) -> dict[str, int]:
    value = value or {}
    return {name: int(value.get(name, 0)) for name in COUNTERS}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _entry(total: dict[str, int] | None, last_minute: dict[str, int] | None,
           per_minute: list[int]) -> Json:
    """One category's (or path's) counts: since the start, this minute, per minute."""
    counts = _counts(total)
    return {**counts, "match_rate": _rate(counts["matched"], counts["predicted"]),
            "last_minute": _counts(last_minute), "last_hour": sum(per_minute),
            "per_minute": per_minute}


def _minutes(now: float) -> list[int]:
    """Start times (unix s) of the last hour's one-minute windows, oldest first."""
    current = int(now // 60) * 60
    return [current - 60 * i for i in range(HOUR_MINUTES - 1, -1, -1)]


def _windows(app: StreamApp, oldest: int) -> dict[str, dict[int, dict[str, int]]]:
    """table key -> window start -> counts, in one pass over the per-minute store (one lookup
    per key and minute would block the event loop for a long time with many category paths)."""
    windows: dict[str, dict[int, dict[str, int]]] = defaultdict(dict)
    for stored_key, value in list(app.per_minute.table.data.items()):
        try:
            key, (start, _end) = stored_key  # (key, (start, end)): a tuple, or a list from JSON
        except (TypeError, ValueError):
            continue
        if start >= oldest:
            windows[key][int(start)] = value or {}
    return windows


def _with_totals(stats: Json) -> Json:
    counts = _counts(None)
    for entry in stats["categories"].values():
        counts = merge_counts(counts, {name: entry[name] for name in COUNTERS})
    stats["totals"] = {**counts, "match_rate": _rate(counts["matched"], counts["predicted"]),
                       "dead_letters": sum(stats["dead_letters"].values()),
                       "recovered": sum(stats["recovered"].values())}
    return stats


def _source_topics(app: StreamApp) -> set[str]:
    return {topic.get_topic_name()
            for topic in (app.comments_topic, app.inference_topic, app.stats_topic)}


async def _offsets(app: StreamApp, tps: list[TP]) -> tuple[dict[TP, int], dict[TP, int | None]]:
    """End offsets by ListOffsets(LATEST), and the committed offset (else the position)."""
    listed = dict(await app.consumer.highwaters(*tps)) if tps else {}
    committed: dict[TP, int] = dict(app.monitor.tp_committed_offsets)
    done = {tp: committed.get(tp) for tp in tps}
    for tp in [tp for tp, offset in done.items() if offset is None]:
        done[tp] = await app.consumer.position(tp)
    return listed, done


async def consumer_lag(app: StreamApp) -> Json:
    """Lag of the partitions this worker consumes, from its Kafka consumer.

    Both sources of the end offset can only read low: ListOffsets(LATEST) on the embedded
    broker (see LAG_NOTE), and the high watermark of the last fetch on a partition Faust has
    paused because its stream buffer is full. Their maximum is the best of the two.
    """
    result: Json = {"at": round(time.time(), 3), "total": None, "partitions": [],
                    "note": LAG_NOTE}
    try:
        topics = _source_topics(app)
        tps = sorted((tp for tp in app.consumer.assignment() if tp.topic in topics),
                     key=lambda tp: (tp.topic, tp.partition))
        listed, done = await asyncio.wait_for(_offsets(app, tps), LAG_TIMEOUT_S)
        fetched = {tp: app.consumer.highwater(tp) for tp in tps}
    except Exception as exc:  # not started, a rebalance in progress, a broker away: say so
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    committed = app.monitor.tp_committed_offsets
    result["partitions"] = [
        _lag_entry(tp.topic, tp.partition, listed.get(tp), fetched[tp], committed.get(tp),
                   done[tp]) for tp in tps]
    if app.intake is not None:  # the batch intake's partitions, from its own consumer
        try:
            intake = await asyncio.wait_for(app.intake.offsets(), LAG_TIMEOUT_S)
        except Exception as exc:  # as above: say so
            result["error"] = f"{type(exc).__name__}: {exc}"
            intake = []
        result["partitions"] += [_lag_entry(*offsets) for offsets in intake]
    result["total"] = sum(entry["lag"] or 0 for entry in result["partitions"])
    return result


def _lag_entry(topic: str, partition: int, listed: int | None, fetched: int | None,
               committed: int | None, position: int | None) -> Json:
    known = [offset for offset in (listed, fetched) if offset is not None]
    end = max(known) if known else None
    lag = max(end - position, 0) if end is not None and position is not None else None
    return {"topic": topic, "partition": partition, "end_offset": end,
            "list_offsets_end": listed, "fetch_highwater": fetched, "committed": committed,
            "position": position, "lag": lag}


class LagMonitor:
    """Consumer lag, at most LAG_INTERVAL_S old: asking for end offsets goes through Faust's
    consumer thread (up to a second under load), so requests close together share one answer."""

    def __init__(self, app: StreamApp) -> None:
        self.app = app
        self.latest: Json = {"at": None, "total": None, "partitions": [], "note": LAG_NOTE}
        self._refresh: asyncio.Future[None] | None = None

    async def _run(self) -> None:
        self.latest = await consumer_lag(self.app)

    async def current(self) -> Json:
        at = self.latest["at"]
        if at is None or time.time() - at > LAG_INTERVAL_S:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.ensure_future(self._run())
            await asyncio.shield(self._refresh)  # a client going away must not cancel it
        return self.latest


def _engine_state(app: StreamApp) -> Json:
    """The batch limit the model is given now (it halves on out-of-memory, then recovers)."""
    return app.models.engine_state() if app.models is not None else {}


async def collect_stats(app: StreamApp, lag: LagMonitor) -> Json:
    """This worker's `/api/stats`."""
    now = time.time()
    minutes = _minutes(now)
    windows = _windows(app, minutes[0])
    groups: dict[str, Json] = {CATEGORY: {}, PATH: {}, DEAD_LETTER: {}, RECOVERED: {}}
    for key, value in list(app.totals.items()):
        kind, name = split_key(key)
        if kind in (DEAD_LETTER, RECOVERED):
            groups[kind][name] = int((value or {}).get("seen", 0))
        elif kind in groups:
            by_start = windows.get(key, {})
            groups[kind][name] = _entry(
                value, by_start.get(minutes[-1]),
                [int(by_start.get(m, {}).get("seen", 0)) for m in minutes])
    worker_stats = app.worker_stats
    window, window_s = worker_stats.window()
    return _with_totals({
        "app_id": app.conf.id,
        "worker": str(app.conf.canonical_url),
        "generated_at": round(now, 3),
        "assigned_partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in [
            *app.consumer.assignment(), *(app.intake.assignment() if app.intake else ())]),
        "unread_partitions": sorted(f"{tp.topic}:{tp.partition}"
                                    for tp in unread_partitions(app.consumer)),
        "model": app.models.status() if app.models is not None else None,
        "agents": {**worker_stats.snapshot(), **_engine_state(app)},
        **window.describe(window_s),
        "minutes": minutes,
        "categories": groups[CATEGORY],
        "category_paths": groups[PATH],
        "dead_letters": groups[DEAD_LETTER],
        "dead_letters_latest": list(worker_stats.latest_dead_letters),
        "recovered": groups[RECOVERED],
        "lag": await lag.current(),
    })


# -- the cluster --------------------------------------------------------------------------------

def _sum_entries(parts: Iterable[tuple[list[int], Json]], minutes: list[int]) -> Json:
    """Add up several workers' category (or path) entries, aligning their minutes."""
    totals: dict[str, dict[str, int]] = {}
    last: dict[str, dict[str, int]] = {}
    per_minute: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for part_minutes, entries in parts:
        for name, entry in entries.items():
            totals[name] = merge_counts(totals.get(name), _counts(entry))
            last[name] = merge_counts(last.get(name), _counts(entry["last_minute"]))
            for start, seen in zip(part_minutes, entry["per_minute"], strict=True):
                per_minute[name][start] += seen
    return {name: _entry(totals[name], last[name], [per_minute[name][m] for m in minutes])
            for name in sorted(totals)}


def merge_stats(parts: list[Json]) -> Json:
    """Several workers' `/api/stats` as one: same keys, numbers added, quantiles recomputed."""
    local = parts[0]
    minutes = local["minutes"]
    window = Interval()
    for part in parts:
        window.merge(Interval.from_description(part))
    dead_letters: dict[str, int] = {}
    recovered: dict[str, int] = {}
    for part in parts:
        dead_letters = merge_counts(dead_letters, part["dead_letters"])
        recovered = merge_counts(recovered, part.get("recovered", {}))  # older peers lack it
    lag_parts = [{"worker": part["worker"], **p} for part in parts
                 for p in part["lag"]["partitions"]]
    lag_errors = [part["lag"]["error"] for part in parts if "error" in part["lag"]]
    latest = sorted((d for part in parts for d in part["dead_letters_latest"]),
                    key=lambda d: d["at"], reverse=True)
    return _with_totals({
        "app_id": local["app_id"],
        "worker": local["worker"],
        "generated_at": local["generated_at"],
        "assigned_partitions": sorted(p for part in parts for p in part["assigned_partitions"]),
        "model": local["model"],
        "agents": merge_snapshots([part["agents"] for part in parts]),
        **window.describe(max(part["batching"]["window_s"] for part in parts)),
        "minutes": minutes,
        "categories": _sum_entries(((p["minutes"], p["categories"]) for p in parts), minutes),
        "category_paths": _sum_entries(((p["minutes"], p["category_paths"]) for p in parts),
                                       minutes),
        "dead_letters": dead_letters,
        "dead_letters_latest": latest[:LATEST_DEAD_LETTERS],
        "recovered": recovered,
        "lag": {"total": sum(p["lag"] or 0 for p in lag_parts), "partitions": lag_parts,
                "note": LAG_NOTE, **({"error": "; ".join(lag_errors)} if lag_errors else {})},
    })


def members(app: StreamApp) -> list[str]:
    """Web URLs of the consumer group's members, from the last assignment (this one first)."""
    me = str(app.conf.canonical_url)
    router = app.router
    urls = set(router.tables_metadata()) | set(router.external_topics_metadata())
    return [me, *sorted(urls - {me})]


async def _fetch(session: aiohttp.ClientSession, url: str) -> Json:
    async with session.get(url.rstrip("/") + "/api/stats") as response:
        response.raise_for_status()
        return dict(await response.json())


async def collect_cluster(app: StreamApp, lag: LagMonitor) -> Json:
    """`/api/cluster`: every member's `/api/stats`, added up; `workers` says who holds what."""
    urls = members(app)
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        local, peers = await asyncio.gather(
            collect_stats(app, lag),
            asyncio.gather(*(_fetch(session, url) for url in urls[1:]), return_exceptions=True))
    workers: list[Json] = []
    parts: list[Json] = []
    for url, answer in zip(urls, [local, *peers], strict=True):
        if isinstance(answer, BaseException):
            workers.append({"url": url, "ok": False,
                            "error": f"{type(answer).__name__}: {answer}"})
            continue
        parts.append(answer)
        model = answer["model"] or {}
        workers.append({
            "url": url, "ok": True, "assigned_partitions": answer["assigned_partitions"],
            "records": answer["agents"]["records"],
            "records_per_second": answer["agents"]["records_per_second"],
            "model_version": model.get("version"), "lag": answer["lag"]["total"]})
    return {**merge_stats(parts), "workers": workers}


# -- routes -------------------------------------------------------------------------------------

def _static(name: str) -> tuple[bytes, str] | None:
    path = STATIC_DIR / name
    content_type = STATIC_TYPES.get(path.suffix)
    if content_type is None or path.parent != STATIC_DIR or not path.is_file():
        return None
    return path.read_bytes(), content_type


def register(app: StreamApp) -> None:
    lag = LagMonitor(app)

    class StatsView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await collect_stats(app, lag))

    class ClusterView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await collect_cluster(app, lag))

    class DashboardView(View):
        async def get(self, request: Request, name: str = "index.html") -> Response:
            found = _static(name)
            if found is None:
                raise self.NotFound(f"no such file: {name}")
            body, content_type = found
            return self.bytes(body, content_type=content_type,
                              headers={"Cache-Control": "no-cache"})

    # `/api/stats/` is the original path; both spellings are served.
    for path, view in (("/api/stats", StatsView), ("/api/stats/", StatsView),
                       ("/api/cluster", ClusterView), ("/api/cluster/", ClusterView),
                       ("/dashboard", DashboardView), ("/dashboard/", DashboardView),
                       ("/dashboard/{name}", DashboardView)):
        app.page(path, name=f"streamapp{path}")(view)
    metrics.register(app, lag)
    health.register(app)
