"""The work on one batch beside the model: decode its records, score their comments, encode
one result or dead letter per comment and the batch's counts.

It runs where the model runs: in the model process by default (streamapp.pipeline.
model_process), so that the worker's event loop only moves bytes between Kafka and that
process (decoding, validating and encoding the results took about half of the worker's main
thread in a profile without a model: BENCHMARKS.md, "Profiles"); on the worker's own threads
with STREAMAPP_MODEL_PROCESS=false. Either way a batch crosses as one frame each way (records
out, `BatchWork` back, streamapp.serving.process), so both modes run the same code.

A batch is `kind` "direct" (records of the comment topic, one comment each) or "fanned_out"
(records of the inference topic, each the comments of an ingest batch, streamapp.pipeline.
fanout). Comments go to the model in batches of at most STREAMAPP_BATCH_SIZE, at once.
"""

from __future__ import annotations

import asyncio
import operator
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from streamapp.decoding import decode_comments
from streamapp.framing import header_of, unpack
from streamapp.pipeline.counts import BatchTally, Source, tally_keys
from streamapp.pipeline.ledger import lane_of, source_of
from streamapp.records import (
    CATEGORY_FIELDS,
    Comment,
    Incoming,
    Reason,
    Recovery,
    RejectedRecord,
    comment_id,
    dead_letter,
    path_of,
    result_json,
)
from streamapp.serving.outcomes import BatchScores, ModelFailure, Scored
from streamapp.serving.service import Score  # InProcessModels.score
from streamapp.settings import Settings

Decoded = tuple[str, int | None, Comment]  # comment id, source timestamp (ms), comment


class Rejected(NamedTuple):
    """A comment, or a record whole, that cannot be predicted: its dead letter's makings."""

    record_id: str
    source_ts: int | None
    value: bytes | None  # the original bytes
    why: RejectedRecord


# A comment decoded or rejected, with the source the tables count it by.
Sourced = tuple[Decoded | Rejected, Source]
# A batch's records to their comments, in order (a fan-out record carries several).
Decoder = Callable[[Settings, Sequence[Incoming]], list[Sourced]]

# What starts a fan-out message of this version: no JSON text starts with a NUL.
FANNED_OUT_MARK = b"\x00SA2"

_RECOVERIES = (None, *typing.get_args(Recovery))


def decode_sources(settings: Settings, comments: Sequence[tuple[str, int | None, bytes | None]]
                   ) -> list[Decoded | Rejected]:
    """Comments as the comment topic carries them (id, timestamp, value): each decoded and
    validated, or rejected; the batch at once (streamapp.decoding.decode_comments)."""
    outcomes = decode_comments([value for _, _, value in comments],
                               input_format=settings.input_format,
                               separator=settings.separator,
                               max_review_chars=settings.max_review_chars)
    return [Rejected(record_id, source_ts, value, outcome)
            if isinstance(outcome, RejectedRecord) else (record_id, source_ts, outcome)
            for (record_id, source_ts, value), outcome in zip(comments, outcomes, strict=True)]


def decode_direct(settings: Settings, records: Sequence[Incoming]) -> list[Sourced]:
    """The direct path's decoder: a comment-topic record is one comment, counted in the lane
    of its own partition (as streamapp.pipeline.ledger.source_of has it, without parsing the
    record's id again)."""
    lanes: dict[tuple[str, int], str] = {}
    sources = []
    for record in records:
        lane = lanes.get((record.topic, record.partition))
        if lane is None:
            lane = lanes[record.topic, record.partition] = lane_of(record.topic,
                                                                   record.partition)
        sources.append((lane, record.offset))
    decoded = decode_sources(settings, [(comment_id(r.topic, r.partition, r.offset),
                                         r.timestamp_ms, r.value) for r in records])
    return list(zip(decoded, sources, strict=True))


def decode_fanned_out(settings: Settings, records: Sequence[Incoming]) -> list[Sourced]:
    """The comments of inference-topic messages, in the order the ingest agent read them,
    each counted in its lane (streamapp.pipeline.ledger.source_of)."""
    read = [read_fanned_out(record) for record in records]
    # This version's comments, of all the messages, decoded at once.
    fresh = iter(decode_sources(settings, [comment for comments in read
                                           if isinstance(comments, _Carried)
                                           for comment in comments.values]))
    return [(item, source_of(record, item[0]))
            for record, comments in zip(records, read, strict=True)
            for item in ([next(fresh) for _ in comments.values]
                         if isinstance(comments, _Carried) else comments)]


class _Carried(NamedTuple):
    """The comments a fan-out message of this version carries, still to decode."""

    values: list[tuple[str, int | None, bytes | None]]


def read_fanned_out(record: Incoming) -> _Carried | list[Decoded | Rejected]:
    """An inference-topic message's comments: this version's still to decode; earlier forms
    decoded; a foreign producer's message one dead letter.

    This version's: FANNED_OUT_MARK, then the comments' ids, timestamps and values as read
    from the comment topic (streamapp.framing), each decoded as the direct path does.
    Before it: a JSON array of `{"id", "ts", "comment", "recovered"?}` holding comments the
    ingest agent had validated, or one such object (before batches); a rolling upgrade
    finds all three."""
    value = record.value or b""
    try:
        if value.startswith(FANNED_OUT_MARK):
            header, values = unpack(value, len(FANNED_OUT_MARK))
            ids, stamps = header["id"], header["ts"]
            if len(ids) != len(values) or len(stamps) != len(values) or not values or \
                    not all(_is_id_and_ts(i, ts) for i, ts in zip(ids, stamps, strict=True)):
                raise ValueError("ids, timestamps and values that do not match")
            return _Carried(list(zip(ids, stamps, values, strict=True)))
        parsed = orjson.loads(value)
        payloads = parsed if isinstance(parsed, list) else [parsed]
        if not payloads:
            raise ValueError("an empty array")
        return [_decoded(payload) for payload in payloads]
    except Exception as exc:
        return [Rejected(record.id, record.timestamp_ms, record.value, RejectedRecord(
            Reason.INVALID_JSON, f"not a streamapp inference record: {exc}"))]


def comments_in(value: bytes | None) -> int:
    """How many comments an inference-topic message holds, from its header alone (1 for a
    message of an earlier form or a foreign one: each is read whole on the other side)."""
    if value and value.startswith(FANNED_OUT_MARK):
        try:
            return max(1, len(header_of(value, len(FANNED_OUT_MARK))[0]["lengths"]))
        except ValueError:
            return 1
    return 1


def _is_id_and_ts(record_id: object, source_ts: object) -> bool:
    # Checked: the id names the comment's lane and offset in the tables (source_of).
    return isinstance(record_id, str) and (source_ts is None or type(source_ts) is int)


def _decoded(payload: dict[str, Any]) -> Decoded:
    record_id, source_ts, recovered = payload["id"], payload.get("ts"), payload.get("recovered")
    if not _is_id_and_ts(record_id, source_ts) or recovered not in _RECOVERIES:
        raise ValueError(f"bad id, ts or recovered in {str(payload)[:200]}")
    return record_id, source_ts, Comment.model_validate(payload["comment"]).mark_recovered(
        recovered)


DECODERS: dict[str, Decoder] = {"direct": decode_direct, "fanned_out": decode_fanned_out}


def _request(comment: Comment) -> dict[str, Any]:
    """The seed's reqDict: the comment's fields, and the review text as `input`."""
    # vars(): the validated fields as they are; model_dump() copies them, 30 times slower.
    return {**vars(comment), "input": comment.reviewBody}


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter, encoded, with what the web view shows of it."""

    record_id: str
    reason: str
    error: str
    value: bytes  # the DeadLetter JSON


@dataclass
class BatchWork:
    """What one batch gives: its results (record id, SkuMatchResult JSON) and dead letters in
    the order of its records, its counts for the tables, and the fields of its BatchReport
    (streamapp.pipeline.stats) but those the worker fills in (finished_at, batch_s, counts)."""

    results: list[tuple[str, bytes]] = field(default_factory=list)
    letters: list[Letter] = field(default_factory=list)
    tally: BatchTally = field(default_factory=BatchTally)
    report: dict[str, Any] = field(default_factory=dict)

    def reject(self, settings: Settings, record_id: str, reason: str, error: str,
               raw: bytes | None, source_ts: int | None, source: Source) -> None:
        letter = dead_letter(record_id, reason, error, raw, source_ts=source_ts,
                             failed_at=int(time.time() * 1000),
                             max_value_bytes=settings.dlq_max_value_bytes)
        self.letters.append(Letter(record_id, reason, error, letter.model_dump_json().encode()))
        self.tally.add_dead_letter(reason, source)

    def to_frame(self) -> tuple[dict[str, Any], list[bytes | None]]:
        """The JSON header and the binary values of a frame (streamapp.serving.process)."""
        header = {"results": [record_id for record_id, _ in self.results],
                  "letters": [[x.record_id, x.reason, x.error] for x in self.letters],
                  "tally": self.tally.to_wire(), "report": self.report}
        return header, [v for _, v in self.results] + [x.value for x in self.letters]

    @classmethod
    def from_frame(cls, header: dict[str, Any], blobs: Sequence[bytes | None]) -> BatchWork:
        ids, letters = header["results"], header["letters"]
        values = [b or b"" for b in blobs]
        return cls(list(zip(ids, values[:len(ids)], strict=True)),
                   [Letter(i, r, e, v) for (i, r, e), v in zip(letters, values[len(ids):],
                                                              strict=True)],
                   BatchTally.from_wire(header["tally"]), header["report"])


def records_to_frame(kind: str, records: Sequence[Incoming]
                     ) -> tuple[dict[str, Any], list[bytes | None]]:
    """A batch's records as a frame: the values as they are, the rest a column each."""
    values, topics, partitions, offsets, timestamps = (zip(*records, strict=True) if records
                                                       else ((),) * 5)
    return ({"kind": kind, "topic": topics, "partition": partitions, "offset": offsets,
             "ts": timestamps}, list(values))


def records_from_frame(header: dict[str, Any], blobs: Sequence[bytes | None]
                       ) -> tuple[str, list[Incoming]]:
    columns = header["topic"], header["partition"], header["offset"], header["ts"]
    if any(len(column) != len(blobs) for column in columns):
        raise ValueError("a records frame whose columns differ in length")
    return header["kind"], list(map(Incoming, blobs, *columns))


async def work_on(settings: Settings, score: Score, kind: str,
                  records: Sequence[Incoming]) -> BatchWork:
    """Decode, score and encode one batch. Never raises for a record: what cannot be decoded
    or scored is a dead letter."""
    started = time.time()
    work = BatchWork()
    items: list[Decoded] = []
    sources: list[Source] = []
    for item, source in DECODERS[kind](settings, records):
        if isinstance(item, Rejected):
            work.reject(settings, item.record_id, item.why.reason, item.why.error,
                        item.value, item.source_ts, source)
            continue
        items.append(item)
        sources.append(source)
        if item[2].recovered is not None:
            work.tally.add_recovered(item[2].recovered, source)
    size = settings.batch_size
    # At least one call, so that a batch of dead letters still names the model version.
    chunks = [items[i:i + size] for i in range(0, len(items), size)] or [[]]
    scored = await asyncio.gather(*(score([_request(c) for _, _, c in chunk])
                                    for chunk in chunks))
    _encode(settings, work, items, sources, scored, started)
    return work


class _Placement(NamedTuple):
    """Where a comment's category levels put it: its path, as a list and as a name, and the
    table keys it counts in."""

    categories: list[str]
    path: str
    keys: tuple[str, str]


_CATEGORY_LEVELS = operator.attrgetter(*CATEGORY_FIELDS)


def _placements() -> Callable[[Comment], _Placement]:
    """A comment's placement, made once per distinct category path of a batch (a batch of
    512 has a few dozen): each made anew cost about a fifth of the batch's encoding."""
    made: dict[tuple[str, ...], _Placement] = {}

    def place(comment: Comment) -> _Placement:
        levels = _CATEGORY_LEVELS(comment)
        placement = made.get(levels)
        if placement is None:
            categories = comment.categories
            path = path_of(categories)
            placement = made[levels] = _Placement(
                categories, path, tally_keys(comment.first_category, path))
        return placement

    return place


def _encode(settings: Settings, work: BatchWork, items: Sequence[Decoded],
            sources: Sequence[Source], scored: Sequence[BatchScores], started: float) -> None:
    finished = time.time()
    started_ms, finished_ms = started * 1000, finished * 1000
    queue_ms: list[float] = []
    end_to_end_ms: list[float] = []
    threshold = settings.match_threshold
    tally = work.tally
    place = _placements()
    predicted = matched = 0
    at = 0
    for chunk in scored:
        timing, model_ref = chunk.timing, chunk.model
        # With batches in flight a batch may wait for the model thread: compute is the
        # model's own time, measured there.
        compute_ms = round((timing.preprocess_s + timing.process_s) * 1000, 3)
        chunk_items = items[at:at + len(chunk.outcomes)]
        for (record_id, source_ts, comment), outcome, source in zip(
                chunk_items, chunk.outcomes, sources[at:at + len(chunk_items)], strict=True):
            categories, path, keys = place(comment)
            if isinstance(outcome, ModelFailure):
                tally.add_to(keys, predicted=False, matched=False, source=source)
                work.reject(settings, record_id, outcome.reason,
                            f"the model failed on this comment: {outcome.error}",
                            comment.model_dump_json().encode(), source_ts, source)
                continue
            outputs = outcome.outputs if isinstance(outcome, Scored) else None
            score = outcome.score if isinstance(outcome, Scored) else outcome
            match = score >= threshold
            tally.add_to(keys, predicted=True, matched=match, source=source)
            predicted += 1
            matched += match
            queued = 0.0
            if source_ts:
                queued = round(started_ms - source_ts, 3)
                queue_ms.append(queued)
                end_to_end_ms.append(finished_ms - source_ts)
            work.results.append((record_id, result_json(
                record_id, comment, categories, path, score=score, match=match,
                model=model_ref, outputs=outputs,
                timing={"source_ts": source_ts, "queued_ms": queued, "compute_ms": compute_ms,
                        "batch_started_at": int(started_ms), "batch_size": len(chunk_items),
                        "predicted_at": int(finished_ms)})))
        at += len(chunk.outcomes)
    last = scored[-1]
    work.report = {
        "size": len(items), "predicted": predicted, "matched": matched,
        "failed": len(items) - predicted, "model_name": last.model["name"],
        "model_version": last.model["version"], "queue_ms": queue_ms,
        "end_to_end_ms": end_to_end_ms,
        "preprocess_s": sum(s.timing.preprocess_s for s in scored),
        "process_s": sum(s.timing.process_s for s in scored),
        "tokens": sum(s.timing.tokens for s in scored),
        "padded_tokens": sum(s.timing.padded_tokens for s in scored)}


async def answer_work(score: Score, settings: Settings, header: dict[str, Any],
                      blobs: Sequence[bytes | None]) -> tuple[dict[str, Any], list[bytes | None]]:
    """A frame of records to the frame of their BatchWork: the job of the model process
    (streamapp.serving.child.Job), and of the model on the worker's threads."""
    kind, records = records_from_frame(header, blobs)
    return (await work_on(settings, score, kind, records)).to_frame()
