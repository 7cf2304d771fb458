"""The agents' streams: Faust's `take_events`, asleep while there is nothing to take.

Faust's `take_events(max_, within)` wakes every `within` seconds whether or not an event
came: with the 5 ms waits of the ingest and inference takes an idle worker woke 400 times a
second, about 5% of a core of its 8% idle (py-spy: `Stream.take_events` ->
`Service.wait_first`; 3% with both waits at 1 s). That CPU is the model's on a two-core
machine, and every idle worker of a fleet pays it. `BatchingStream` waits
for the first event of a batch without a timeout, then up to `within` for the batch to fill:
the batch wait counts from a batch's first comment (Triton's max queue delay), not from the
last wake-up. Buffering, acks and the one-batch-at-a-time hand-over are Faust's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from faust import Stream
from faust.streams import _tracks_buffer_agen
from faust.types import EventT
from mode import Seconds, want_seconds
from mode.utils.aiter import aiter
from mode.utils.futures import notify


class BatchingStream(Stream):  # type: ignore[type-arg]
    """A Faust Stream whose `take_events` sleeps until a batch has begun."""

    @_tracks_buffer_agen  # Faust's: a generator left unfinished is closed when the stream stops
    async def take_events(self, max_: int, within: Seconds
                          ) -> AsyncGenerator[Sequence[EventT], None]:
        """Batches of up to `max_` events: each yielded when full, or `within` seconds after
        its first event came, whichever is first. As Faust's: the events are acked once the
        loop asks for the next batch, and none are added to a batch while it is out."""
        timeout = want_seconds(within) if within else None
        events: list[EventT] = []
        started = asyncio.Event()  # the batch has its first event
        full = asyncio.Event()
        consumed = asyncio.Event()
        consuming: asyncio.Future[Any] | None = None  # set while a batch is out

        async def add_to_buffer(value: Any) -> Any:
            nonlocal consuming
            try:
                if consuming is not None:
                    try:
                        await consuming
                    finally:
                        consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("Take buffer found current_event is None")
                events.append(event)
                started.set()
                if len(events) >= max_:
                    full.set()
                    # No more than max_: wait until this batch is taken.
                    consumed.clear()
                    await self.wait(consumed)  # type: ignore[arg-type]
            except asyncio.CancelledError:  # pragma: no cover
                raise
            except Exception as exc:
                self.log.exception("Error adding to take buffer: %r", exc)
                await self.crash(exc)
            return value

        enable_acks = self.enable_acks
        self.enable_acks = False  # acked below, once the batch is done with
        self.add_processor(add_to_buffer)
        self._enable_passive(aiter(self.channel))  # type: ignore[arg-type]  # as Faust's
        try:
            while not self.should_stop:
                if not events and await self.wait_for_stopped(started):  # type: ignore[arg-type]
                    break
                await self.wait_for_stopped(full, timeout=timeout)  # type: ignore[arg-type]
                if not events:
                    continue
                consuming = self.loop.create_future()
                try:
                    yield list(events)
                finally:
                    for event in events:
                        await self.ack(event)
                    events.clear()
                    started.clear()
                    full.clear()
                    notify(consuming)  # the next add may go on
                    consumed.set()
        finally:
            self.enable_acks = enable_acks
            self._processors.remove(add_to_buffer)
