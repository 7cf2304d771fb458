"""The agents' take (streamapp.pipeline.streams.BatchingStream): Faust's batches, without
waking every batch wait while there is nothing to take."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import pytest

from streamapp.application import create_app
from streamapp.pipeline.streams import BatchingStream
from streamapp.settings import Settings


def _take(stream_class: type[faust.Stream], values: list[int], *, max_: int, within: float,
          idle_s: float) -> tuple[list[tuple[list[int], float]], int]:
    """`values` through an agent's `take_events(max_, within)`, then `idle_s` of nothing:
    the batches (values, seconds after the first put) and how often the take waited."""
    app = faust.App(f"take-{stream_class.__name__}", broker="kafka://127.0.0.1:1",
                    store="memory://", Stream=stream_class)
    batches: list[tuple[list[int], float]] = []
    waits = [0]
    started = [0.0]
    wait_for_stopped = stream_class.wait_for_stopped

    async def counted(self: Any, *args: Any, **kwargs: Any) -> bool:
        waits[0] += 1
        return await wait_for_stopped(self, *args, **kwargs)

    @app.agent()
    async def batcher(stream: Any) -> None:
        async for events in stream.take_events(max_, within=within):
            batches.append(([event.value for event in events],
                            time.monotonic() - started[0]))

    async def run() -> None:
        app.finalize()
        app.flow_control.resume()
        async with batcher.test_context() as agent:
            started[0] = time.monotonic()
            for value in values:
                await agent.put(value)
            await asyncio.sleep(within + 0.2)  # the last, partial batch
            waits[0] = 0
            await asyncio.sleep(idle_s)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream_class, "wait_for_stopped", counted)
        asyncio.run(run())
    return batches, waits[0]


def test_batches_fill_to_the_most_and_a_partial_one_waits_the_batch_wait() -> None:
    batches, _ = _take(BatchingStream, list(range(7)), max_=3, within=0.1, idle_s=0.0)
    assert [values for values, _ in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    # Full batches go at once; the partial one when the batch wait has passed since its
    # first value, not before.
    last_at = batches[-1][1]
    assert last_at >= 0.1 > batches[1][1]


def test_an_idle_take_sleeps_where_faust_s_wakes_every_batch_wait() -> None:
    _, faust_waits = _take(faust.Stream, [1], max_=64, within=0.005, idle_s=0.3)
    _, our_waits = _take(BatchingStream, [1], max_=64, within=0.005, idle_s=0.3)
    assert faust_waits >= 20  # 0.3 s / 5 ms, less whatever a busy machine skips
    assert our_waits <= 1


def test_the_worker_s_streams_are_batching_streams() -> None:
    app = create_app(Settings(store="memory"))
    assert app.conf.Stream is BatchingStream


def test_leaving_a_take_gives_the_stream_its_acks_back() -> None:
    app = faust.App("take-leave", broker="kafka://127.0.0.1:1", store="memory://",
                    Stream=BatchingStream)
    seen: dict[str, Any] = {}

    @app.agent()
    async def once(stream: Any) -> None:
        async for events in stream.take_events(2, within=0.05):
            seen["values"] = [event.value for event in events]
            seen["acks while taking"] = stream.enable_acks
            break
        await asyncio.sleep(0.05)  # the loop closes a generator left behind (asyncgen hooks)
        seen["acks after"] = stream.enable_acks
        seen["take's processor after"] = [p for p in stream._processors
                                          if p.__name__ == "add_to_buffer"]
        await asyncio.sleep(60)  # until the test context stops the agent

    async def run() -> None:
        app.finalize()
        app.flow_control.resume()
        async with once.test_context() as agent:
            for value in (1, 2):
                await agent.put(value)
            await asyncio.sleep(0.2)

    asyncio.run(run())
    assert seen == {"values": [1, 2], "acks while taking": False, "acks after": True,
                    "take's processor after": []}
