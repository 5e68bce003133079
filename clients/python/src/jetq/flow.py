"""Flow control (docs/PROTOCOL.md §11, docs/FLOW_CONTROL.md): unique tasks and limit keys.

A task with a unique key is enqueued in three steps, exactly as the Rust producer does: take
the key in ``<PREFIX>_UNIQUE`` with a compare-and-set ``create`` (a ``pending`` hold), publish
the task, confirm the hold with its stream sequence. A second enqueue while the key is held gets
the holder's id back with ``duplicate=True``; a hold whose holder vanished (lease or period
over, task gone from the task stream) is taken over with a compare-and-set ``update``.

Rate and concurrency limits are configured on the workers; a producer only names the task's
``limit_key``. The pure functions here (keys, holds, the rate algorithm, slots) are what the
conformance vectors ``docs/conformance/flow_control.json`` pin for every language.

>>> derive_unique_key({"user": 42, "note": "x"}, ["user"])[:5]
'args:'
>>> unique_entry("emails", "send_welcome", "user:42")
'emails.send_welcome.user=3A42'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Tuple

from .errors import EnqueueError
from .priority import queue_token
from .protocol import Prepared, Subjects, format_timestamp, parse_timestamp
from .status import status_key

if TYPE_CHECKING:  # pragma: no cover
    from .producer import AsyncProducer, Enqueued

__all__ = [
    "UNIQUE_KEY",
    "UNIQUE_SCOPE",
    "LIMIT_KEY",
    "Unique",
    "InvalidFlowOption",
    "UniqueUnavailable",
    "validate_unique_key",
    "validate_limit_key",
    "derive_unique_key",
    "unique_entry",
    "rate_entry",
    "concurrency_entry",
    "reservation_entry",
    "unique_bucket",
    "limits_bucket",
    "pending_hold",
    "judge_hold",
    "interval_micros",
    "reserve",
    "acquire_slot",
]

UNIQUE_KEY = "Jetq-Unique-Key"
UNIQUE_SCOPE = "Jetq-Unique-Scope"
LIMIT_KEY = "Jetq-Limit-Key"
SCOPES = ("queued", "active", "period", "debounce")
PENDING_LEASE_US = 60_000_000
MAX_PERIOD = _dt.timedelta(days=30)
CAS_ROUNDS = 8
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class InvalidFlowOption(EnqueueError, ValueError):
    """A unique key, limit key, scope or period is unusable; nothing was sent."""

    def __init__(self, what: str, value: Any, reason: str) -> None:
        self.what, self.value, self.reason = what, value, reason
        super().__init__(f"invalid {what} {value!r}: {reason}")


class UniqueUnavailable(EnqueueError):
    """The unique key could not be taken or its holder checked; nothing was enqueued."""

    def __init__(self, key: str, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(f"cannot hold unique key {key!r}: {reason}")


@dataclasses.dataclass(frozen=True)
class Unique:
    """A task's unique key: ``key`` given, or derived from the ``args`` fields named; ``scope``
    ``queued``, ``active`` (default), ``period`` (with ``period`` seconds or a timedelta) or
    ``debounce`` (``period`` is then the delay after the last enqueue)."""

    key: Optional[str] = None
    args: Optional[Tuple[str, ...]] = None
    scope: str = "active"
    period: Optional[Any] = None


def _validate(what: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or value == "":
        raise InvalidFlowOption(what, value, "it is empty")
    if len(value.encode("utf-8")) > limit:
        raise InvalidFlowOption(what, value, f"it is longer than {limit} bytes")
    if not all(0x21 <= ord(ch) <= 0x7E for ch in value):
        raise InvalidFlowOption(what, value, "only printable ASCII without spaces is allowed")


def validate_unique_key(value: str) -> None:
    """1–256 bytes of printable ASCII without spaces."""
    _validate("unique key", value, 256)


def validate_limit_key(value: str) -> None:
    """1–128 bytes of printable ASCII without spaces."""
    _validate("limit key", value, 128)


def derive_unique_key(args: Any, fields: Iterable[str]) -> str:
    """``args:`` + hex SHA-256 of the compact JSON of the chosen fields, keys sorted."""
    if not isinstance(args, dict):
        raise InvalidFlowOption("unique key arguments", args, "they are not a JSON object")
    chosen: Dict[str, Any] = {}
    for field in fields:
        if field not in args:
            raise InvalidFlowOption("unique key field", field, "the task's arguments have no such field")
        chosen[field] = args[field]
    canonical = json.dumps(chosen, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return "args:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def unique_entry(queue: str, task: str, key: str) -> str:
    return f"{queue}.{task}.{status_key(key)}"


def _limit_entry(kind: str, queue: str, task: str, limit_key: Optional[str]) -> str:
    base = f"{kind}.{queue}.{task}"
    return base if limit_key is None else f"{base}.{status_key(limit_key)}"


def rate_entry(queue: str, task: str, limit_key: Optional[str] = None) -> str:
    return _limit_entry("rate", queue, task, limit_key)


def concurrency_entry(queue: str, task: str, limit_key: Optional[str] = None) -> str:
    return _limit_entry("conc", queue, task, limit_key)


def reservation_entry(sequence: int) -> str:
    return f"resv.{sequence}"


def unique_bucket(subjects: Subjects) -> str:
    return subjects.tasks_stream[: -len("_TASKS")] + "_UNIQUE"


def limits_bucket(subjects: Subjects) -> str:
    return subjects.tasks_stream[: -len("_TASKS")] + "_LIMITS"


def micros(text: Optional[str]) -> Optional[int]:
    """A protocol timestamp as microseconds since the epoch (None if it is not one)."""
    moment = parse_timestamp(text) if isinstance(text, str) else None
    return None if moment is None else (moment - _EPOCH) // _dt.timedelta(microseconds=1)


def format_micros(at: int) -> str:
    return format_timestamp(_EPOCH + _dt.timedelta(microseconds=at))


def _period_micros(period: Any) -> int:
    if isinstance(period, _dt.timedelta):
        seconds = period
    elif isinstance(period, (int, float)) and not isinstance(period, bool):
        seconds = _dt.timedelta(seconds=period)
    else:
        raise InvalidFlowOption("unique period", period, "give seconds or a timedelta")
    if seconds < _dt.timedelta(milliseconds=1) or seconds > MAX_PERIOD:
        raise InvalidFlowOption("unique period", period, "it must be between 1 ms and 30 days")
    return seconds // _dt.timedelta(microseconds=1)


def pending_hold(task_id: str, queue: str, task: str, scope: str, now: int, period_us: Optional[int] = None) -> Dict[str, Any]:
    """The ``pending`` hold a producer takes the key with (field order as the Rust producer)."""
    hold: Dict[str, Any] = {
        "task_id": task_id,
        "queue": queue,
        "task": task,
        "scope": scope,
        "state": "pending",
        "taken_at": format_micros(now),
        "lease_until": format_micros(now + PENDING_LEASE_US),
    }
    if scope == "period" and period_us is not None:
        hold["expires_at"] = format_micros(now + period_us)
    return hold


def judge_hold(hold: Any, now: int) -> str:
    """``held``, ``free`` or ``held_if_task_exists:<sequence>`` (PROTOCOL §11, rule 2)."""
    if not isinstance(hold, dict):
        return "free"
    if hold.get("scope") == "period":
        end = micros(hold.get("expires_at"))
        return "held" if end is not None and end > now else "free"
    sequence = hold.get("sequence")
    if hold.get("state") == "queued" and isinstance(sequence, int) and not isinstance(sequence, bool):
        return f"held_if_task_exists:{sequence}"
    end = micros(hold.get("lease_until"))
    return "held" if end is not None and end > now else "free"


def interval_micros(rate: float) -> int:
    """Microseconds between tokens: 1 s / rate, rounded half away from zero, at least 1."""
    if not (isinstance(rate, (int, float)) and rate > 0 and rate != float("inf")):
        raise InvalidFlowOption("rate", rate, "a rate limit must be a positive, finite number of tasks per second")
    return max(1, int(1_000_000 / rate + 0.5))


def reserve(rate: float, burst: int, tat: Optional[int], now: int) -> Tuple[int, int]:
    """GCRA: ``(start, new tat)`` for a task arriving at ``now`` (microseconds)."""
    if burst < 1:
        raise InvalidFlowOption("burst", burst, "a rate limit's burst must be at least 1 task")
    interval = interval_micros(rate)
    tolerance = interval * (burst - 1)
    current = max(now if tat is None else tat, now)
    return max(now, current - tolerance), current + interval


def acquire_slot(slots: Dict[str, Any], maximum: int, sequence: int, task_id: str, now: int, until: int) -> Optional[Dict[str, Any]]:
    """The slots with this task's slot taken or renewed (ended leases dropped); None if full."""
    holders = [h for h in slots.get("holders", []) if isinstance(h, dict)]
    live = [h for h in holders if (micros(h.get("until")) or 0) > now and h.get("sequence") != sequence]
    renewing = any(h.get("sequence") == sequence for h in holders)
    if not renewing and len(live) >= maximum:
        return None
    return {"holders": live + [{"sequence": sequence, "task_id": task_id, "until": format_micros(until)}]}


def flow_headers(prepared: Prepared, args: Any, unique: Optional[Unique], limit_key: Optional[str]) -> Tuple[Prepared, Optional[int]]:
    """``prepared`` with the flow headers, and the period of a ``period`` scope (microseconds)."""
    headers = dict(prepared.headers)
    period_us = None
    if unique is not None:
        if prepared.delayed:
            from .errors import NotSupported

            raise NotSupported("unique keys on delayed tasks", "the hold would name a delayed-stream sequence")
        if unique.scope not in SCOPES:
            raise InvalidFlowOption("unique scope", unique.scope, "expected queued, active, period or debounce")
        if (unique.key is None) == (unique.args is None):
            raise InvalidFlowOption("unique key", unique.key, "give key or args, not both")
        key = unique.key if unique.key is not None else derive_unique_key(args, unique.args or ())
        validate_unique_key(key)
        if unique.scope in ("period", "debounce"):
            period_us = _period_micros(unique.period)
        headers[UNIQUE_KEY] = key
        headers[UNIQUE_SCOPE] = unique.scope
        if unique.scope == "debounce" and period_us is not None:
            # The task itself waits in the delayed-task stream until ``d`` after this enqueue.
            due = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(microseconds=period_us)
            not_before = format_timestamp(due)
            # The queue token carries the task's level (docs/PROTOCOL.md §12).
            token = queue_token(prepared.queue, prepared.priority)
            prefix = prepared.subject[: -len(f".task.{token}.{prepared.task}")]
            headers["Jetq-Not-Before"] = not_before
            subject = Subjects(prefix).delayed(int(due.timestamp()), token, prepared.task)
            return dataclasses.replace(prepared, headers=headers, subject=subject, not_before=not_before), period_us
    if limit_key is not None:
        validate_limit_key(limit_key)
        headers[LIMIT_KEY] = limit_key
    return dataclasses.replace(prepared, headers=headers), period_us


async def enqueue_unique(producer: "AsyncProducer", prepared: Prepared, period_us: Optional[int]) -> "Enqueued":
    """Takes the unique key, publishes, confirms (PROTOCOL §11, "Unique tasks")."""
    import nats.js.errors

    from .errors import NotConnected, Timeout
    from .producer import Enqueued

    key = prepared.headers[UNIQUE_KEY]
    scope = prepared.headers[UNIQUE_SCOPE]
    js = producer.client.jetstream()
    bucket = unique_bucket(producer.subjects)
    try:
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            if not producer.config.provision:
                raise UniqueUnavailable(key, f"bucket {bucket} is missing (run jetq-provision or start a worker)") from None
            kv = await js.create_key_value(bucket=bucket, history=1)
    except UniqueUnavailable:
        raise
    except Exception as err:
        raise UniqueUnavailable(key, f"cannot open bucket {bucket}: {err}") from err
    entry = unique_entry(prepared.queue, prepared.task, key)
    if scope == "debounce":
        return await _enqueue_debounced(producer, kv, prepared, entry)
    now = micros(format_timestamp()) or 0
    hold = pending_hold(prepared.id, prepared.queue, prepared.task, scope, now, period_us)
    value = json.dumps(hold, separators=(",", ":")).encode()
    revision: Optional[int] = None
    for _ in range(CAS_ROUNDS):
        try:
            revision = await kv.create(entry, value)
            break
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        except Exception as err:
            raise UniqueUnavailable(key, f"cannot take the key: {err}") from err
        try:
            current = await kv.get(entry)
        except nats.js.errors.KeyNotFoundError:
            continue
        except Exception as err:
            raise UniqueUnavailable(key, f"cannot read the key's holder: {err}") from err
        try:
            holder = json.loads(current.value or b"")
        except ValueError:
            holder = None
        verdict = judge_hold(holder, now)
        held = verdict == "held"
        if verdict.startswith("held_if_task_exists:"):
            held = await _task_in_stream(js, producer.subjects.tasks_stream, int(verdict.split(":")[1]), holder["task_id"])
        if held:
            return Enqueued(id=holder["task_id"], sequence=int(holder.get("sequence") or 0), duplicate=True, stream=producer.subjects.tasks_stream)
        try:
            revision = await kv.update(entry, value, last=current.revision)
            break
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        except Exception as err:
            raise UniqueUnavailable(key, f"cannot take the key over: {err}") from err
    if revision is None:
        raise UniqueUnavailable(key, f"the key changed hands {CAS_ROUNDS} times while taking it; try again")
    try:
        result = await producer.publish_prepared(prepared)
    except (Timeout, NotConnected):
        raise  # the task may be queued: keep the pending hold until its lease ends
    except Exception:
        try:
            await kv.delete(entry, last=revision)
        except Exception:
            pass
        raise
    queued = {k: v for k, v in hold.items() if k != "lease_until"}
    queued["state"] = "queued"
    queued["sequence"] = result.sequence
    ordered = {k: queued[k] for k in ("task_id", "queue", "task", "scope", "state", "sequence", "taken_at", "expires_at") if k in queued}
    try:
        await kv.update(entry, json.dumps(ordered, separators=(",", ":")).encode(), last=revision)
    except Exception:
        pass  # the pending hold's lease ends in a minute; the key is then free again
    return result


async def _enqueue_debounced(producer: "AsyncProducer", kv: Any, prepared: Prepared, entry: str) -> "Enqueued":
    """Debounce (PROTOCOL §11): publish the delayed task, then make the key name it unless a
    later enqueue already did (the worker drops every task the key no longer names)."""
    import nats.js.errors

    key = prepared.headers[UNIQUE_KEY]
    now = micros(prepared.headers.get("Jetq-Enqueued-At")) or micros(format_timestamp()) or 0
    result = await producer.publish_prepared(prepared)
    hold = {
        "task_id": prepared.id,
        "queue": prepared.queue,
        "task": prepared.task,
        "scope": "debounce",
        "state": "delayed",
        "sequence": result.sequence,
        "taken_at": format_micros(now),
        "expires_at": prepared.not_before,
    }
    value = json.dumps(hold, separators=(",", ":")).encode()
    for _ in range(CAS_ROUNDS):
        deleted_revision = 0
        try:
            current = await kv.get(entry)
        except nats.js.errors.KeyNotFoundError as err:
            current = None
            marker = getattr(err, "entry", None)
            deleted_revision = int(getattr(marker, "revision", 0) or 0)
        try:
            if current is None:
                # No key, or a delete marker: write on the marker's revision (0 = create).
                await kv.update(entry, value, last=deleted_revision)
            else:
                try:
                    stored = json.loads(current.value or b"")
                except ValueError:
                    stored = None
                taken = micros(stored.get("taken_at")) if isinstance(stored, dict) else None
                if taken is not None and taken > now:
                    return result  # a later enqueue already named its task: this one is replaced
                await kv.update(entry, value, last=current.revision)
            return result
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        except Exception as err:
            raise UniqueUnavailable(key, f"the task is in the delayed stream but the key could not name it: {err}") from err
    raise UniqueUnavailable(key, "the task is in the delayed stream but the key kept changing; it will be dropped as replaced")


async def _task_in_stream(js: Any, stream: str, sequence: int, task_id: str) -> bool:
    """True if the task stream holds ``task_id`` at ``sequence``; unknown counts as present."""
    import nats.js.errors

    try:
        message = await js.get_msg(stream, seq=sequence)
    except nats.js.errors.NotFoundError:
        return False
    except Exception:
        return True
    stored = (message.headers or {}).get("Nats-Msg-Id")
    return stored is None or stored == task_id
