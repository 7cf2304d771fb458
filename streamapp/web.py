"""`/api/stats/`: this worker's agent stats and the per-category counts its tables hold.

Each worker's tables hold the keys of the stats partitions assigned to it: with several workers
the per-category numbers of the cluster are the sum over the workers (keys never overlap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from streamapp.stats import CATEGORY, COUNTERS, DEAD_LETTER, PATH, split_key

if TYPE_CHECKING:
    from streamapp.application import StreamApp


def _counts(value: dict[str, int] | None) -> dict[str, int]:
    value = value or {}
    return {name: int(value.get(name, 0)) for name in COUNTERS}


def collect_stats(app: StreamApp) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {CATEGORY: {}, PATH: {}, DEAD_LETTER: {}}
    for key, value in list(app.totals.items()):
        kind, name = split_key(key)
        if kind not in groups:
            continue
        if kind == DEAD_LETTER:
            groups[kind][name] = int((value or {}).get("seen", 0))
            continue
        entry = _counts(value)
        entry["last_minute"] = _counts(app.per_minute[key].now())
        groups[kind][name] = entry
    assignment = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
    model = app.models.status() if app.models is not None else None
    return {
        "app_id": app.conf.id,
        "worker": f"{app.conf.web_host}:{app.conf.web_port}",
        "assigned_partitions": assignment,
        "model": model,
        "agents": app.worker_stats.snapshot(),
        "categories": groups[CATEGORY],
        "category_paths": groups[PATH],
        "dead_letters": groups[DEAD_LETTER],
    }


def register(app: StreamApp) -> None:
    @app.page("/api/stats/")
    class StatsView(View):
        async def get(self, request: Request) -> Response:
            return self.json(collect_stats(app))
