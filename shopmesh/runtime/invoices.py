"""The FACTURATION invoice event of shared/CONTRACT.md, in one place: the message, written (by the producer and
billing's outbox) and read (by the dataflows), and the topics.

The amount is written as a JSON number with two decimals straight from integer cents, and read back with
JSON numbers as Decimal, so it never passes through binary floating point either way."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from tenacity import RetryCallState, retry, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

from kafka import KafkaProducer
from shopmesh.runtime.money import BadAmount, format_cents, to_cents
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = ("invoice_id", "customer_name", "amount", "issued_at")
#: One decoder for every message (json.loads with parse_float builds a new one per call); parse_float keeps a
#: JSON number such as 123.45 exact: it never becomes a binary float.
_DECODER = json.JSONDecoder(parse_float=Decimal)
#: Bounds of what is counted: ids and names as the services bound them, so no state or record grows with input.
MAX_INVOICE_ID = 64
MAX_CUSTOMER_NAME = 200


def topics(settings: Settings) -> dict[str, int]:
    """The mesh's topics, named by the settings, with their partitions."""
    return {
        settings.facturation_topic: 3,
        settings.total_5s_topic: 1,
        settings.total_by_customer_topic: 1,
        settings.dlq_topic: 1,
    }


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    customer_name: str
    amount_cents: int
    issued_at: datetime

    def key(self) -> bytes:
        return self.customer_name.encode()

    def value(self) -> bytes:
        return (
            f'{{"invoice_id": {json.dumps(self.invoice_id)}, "customer_name": {json.dumps(self.customer_name)}, '
            f'"amount": {format_cents(self.amount_cents)}, "issued_at": {json.dumps(iso_millis(self.issued_at))}}}'
        ).encode()


def iso_millis(moment: datetime) -> str:
    """2026-11-28T23:00:00.123Z"""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


class BadInvoice(ValueError):
    """An event that cannot be counted; the message is the reason written to the dead-letter topic."""


#: The kinds of reasons a message is dead-lettered for: a bounded set, fit for a metric's label.
REASON_KINDS = (
    *("not_json", "not_object", "missing_field", "invoice_id", "customer_name", "amount", "issued_at"),
    *("future", "late", "other"),
)


def reason_kind(reason: str) -> str:
    """The kind of a dead letter's reason (one of REASON_KINDS): "amount" for "amount must be ...", say."""
    for prefix, kind in (
        ("not JSON", "not_json"),
        ("not a JSON object", "not_object"),
        ("missing field", "missing_field"),
    ):
        if reason.startswith(prefix):
            return kind
    first = re.split(r"[\s:]", reason, maxsplit=1)[0]
    return first if first in REASON_KINDS else "other"


def parse(raw: bytes, now: datetime | None = None, max_skew: timedelta = timedelta(minutes=5)) -> Invoice:
    """An invoice event of the contract, or BadInvoice naming what is wrong. Whatever the bytes, nothing else is
    raised: one message must never stop a dataflow.

    An invoice issued more than max_skew after now (the dataflow's clock) is refused as `future`: counted, it
    would move the windows' event clock ahead and make every current invoice late."""
    try:
        # As json.loads reads bytes: UTF-8, -16 or -32 by their first bytes. An object that starts "{" with no NUL
        # in its first four bytes is UTF-8 by json.detect_encoding's own rules, asked of nearly every message.
        encoding = "utf-8" if raw[:1] == b"{" and b"\x00" not in raw[:4] else json.detect_encoding(raw)
        event = _DECODER.decode(raw.decode(encoding, "surrogatepass"))
    except (ValueError, RecursionError) as error:
        # ValueError covers bad UTF-8, bad JSON, and integers past Python's digit limit for int().
        raise BadInvoice(f"not JSON: {_short(str(error))}") from None
    if not isinstance(event, dict):
        raise BadInvoice("not a JSON object")
    missing = [name for name in _FIELDS if name not in event]
    if missing:
        raise BadInvoice(f"missing field {missing[0]}")
    for name, limit in (("invoice_id", MAX_INVOICE_ID), ("customer_name", MAX_CUSTOMER_NAME)):
        if not isinstance(event[name], str) or not event[name].strip():
            raise BadInvoice(f"{name} must be a non-empty string")
        if len(event[name]) > limit:
            raise BadInvoice(f"{name} is longer than {limit} characters")
    issued_at = _moment(event["issued_at"])
    if issued_at > (now or datetime.now(UTC)) + max_skew:
        raise BadInvoice(
            f"future: issued_at {iso_millis(issued_at)} is more than {max_skew.total_seconds():g} s "
            "ahead of the dataflow's clock"
        )
    return Invoice(event["invoice_id"], event["customer_name"], _cents(event["amount"]), issued_at)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…"


def _cents(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal, str)):
        raise BadInvoice(f"amount must be a number or a numeric string, not {_short(json.dumps(amount, default=str))}")
    try:
        return to_cents(amount)
    except BadAmount as error:
        raise BadInvoice(f"amount {error}") from None


def _moment(text) -> datetime:
    if not isinstance(text, str):
        raise BadInvoice("issued_at must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInvoice(f"issued_at is not an ISO 8601 timestamp: {_short(repr(text))}") from None
    if moment.tzinfo is None:
        raise BadInvoice(f"issued_at has no time zone: {_short(repr(text))}")
    try:
        # An offset can push a moment past year 9999 or before year 1, which datetime cannot hold.
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BadInvoice(f"issued_at is out of range: {_short(repr(text))}") from None
    if moment < EPOCH:
        raise BadInvoice(f"issued_at is before 1970: {_short(repr(text))}")
    return moment


def producer(settings: Settings) -> KafkaProducer:
    """An idempotent producer that waits for every in-sync replica and retries until its delivery timeout: no
    invoice is lost on a broker outage shorter than that, and the broker drops the producer's own repeats, so none
    is written twice either. max_block_ms bounds how long send() waits for Kafka's metadata."""
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=10000,
        delivery_timeout_ms=600_000,
        max_block_ms=10000,
    )


@retry(
    # A broker just started may be named in the metadata before it listens: asked again, as a short count is.
    retry=retry_if_result(lambda brokers: brokers is not None) | retry_if_exception_type(KafkaError),
    stop=stop_after_delay(60),
    wait=wait_fixed(0.5),
    retry_error_callback=lambda state: _too_few_brokers(state),
)
def _wait_for_brokers(admin: KafkaAdminClient, wanted: int) -> int | None:
    """None once wanted brokers are in the cluster (a topic's replicas need them), else how many there are."""
    brokers = len(admin.describe_cluster()["brokers"])
    return None if brokers >= wanted else brokers


def _too_few_brokers(state: RetryCallState) -> None:
    outcome = state.outcome
    if outcome is not None and outcome.failed:
        raise KafkaError(f"Kafka did not answer within 60 s: {outcome.exception()}")
    brokers = outcome.result() if outcome is not None else 0
    raise KafkaError(f"only {brokers} Kafka broker(s) joined within 60 s, fewer than the topics' replicas")


def ensure_topics(settings: Settings) -> list[str]:
    """Create the contract's topics that are missing, each on as many brokers as the topology has, with writes
    needing all replicas but one (min.insync.replicas); return the ones created."""
    wanted = topics(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        _wait_for_brokers(admin, settings.kafka_replication)
        missing = [name for name in wanted if name not in set(admin.list_topics())]
        created = []
        for name in missing:
            try:
                replicated = NewTopic(
                    name,
                    num_partitions=wanted[name],
                    replication_factor=settings.kafka_replication,
                    topic_configs={"min.insync.replicas": str(settings.kafka_min_insync)},
                )
                admin.create_topics([replicated])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        admin.close()
