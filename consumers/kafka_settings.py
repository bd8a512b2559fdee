"""The librdkafka settings of the config (``kafka.client``, ``kafka.consumer``, ``kafka.producer``),
checked before a command starts.

librdkafka refuses an unknown or malformed property only when a client is built, which happens
deep inside a command (after Redis is opened, or at the first rollback) and surfaces as a
``KafkaException`` traceback. Building a consumer and a producer from the settings up front finds
the same refusals at once: a constructor checks its properties without contacting a broker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from driftline.config import ConfigError, KafkaConfig

__all__ = ["check_kafka_settings"]

# Under the settings, so an operator's own value of either is the one checked: the consumer
# constructor refuses to run without a group, and every driftline producer is idempotent (the dead
# letters, the publisher, the control topic), which rules out settings such as ``acks: 1``.
_CONSUMER_DEFAULTS: dict[str, Any] = {"group.id": "driftline-settings-check", "log_level": 0}
_PRODUCER_DEFAULTS: dict[str, Any] = {"enable.idempotence": True, "log_level": 0}


def check_kafka_settings(kafka: KafkaConfig) -> None:
    """Raise :class:`ConfigError` naming the setting librdkafka refuses, or else the mappings of
    settings it refuses only together (a SASL mechanism without its username)."""
    if not (kafka.client or kafka.consumer or kafka.producer):
        return
    # Refused before any client is built: confluent-kafka aborts the whole process (a failed C
    # assertion, no exception) when a consumer is given an empty group.
    for section in ("client", "consumer"):
        if getattr(kafka, section).get("group.id") == "":
            raise ConfigError(f"kafka.{section}.group.id = '': a consumer group needs a name")
    for section, build, defaults in (
        ("consumer", _build_consumer, _CONSUMER_DEFAULTS),
        ("producer", _build_producer, _PRODUCER_DEFAULTS),
    ):
        own: dict[str, Any] = getattr(kafka, section)
        settings = {**kafka.client, **own}
        refusal = _refusal(build, {**defaults, **settings})
        if refusal is None:
            continue
        # A setting refused on its own with the same words is the culprit; one alone can also be
        # refused for a reason its companions remove (SASL without a mechanism), so no other.
        for key, value in settings.items():
            if _refusal(build, {**defaults, key: value}) == refusal:
                where = section if key in own else "client"
                raise ConfigError(f"kafka.{where}.{key} = {value!r}: {refusal}")
        raise ConfigError(f"kafka.client with kafka.{section}: {refusal}")


def _refusal(build: Callable[[dict[str, Any]], None], settings: dict[str, Any]) -> str | None:
    """Why librdkafka will not build a client from ``settings``, or None if it does."""
    from confluent_kafka import KafkaException

    try:
        build(settings)
    except KafkaException as error:
        return str(error.args[0].str())
    # Settings the Python wrapper checks itself: a callback given a plain value (``error_cb: 1``)
    # is a TypeError, others a ValueError.
    except (TypeError, ValueError) as error:
        return str(error)
    return None


# confluent_kafka is imported in these: commands without librdkafka settings, most of them, skip
# the import.
def _build_consumer(settings: dict[str, Any]) -> None:
    from confluent_kafka import Consumer

    Consumer(settings).close()


def _build_producer(settings: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    Producer(settings)  # destroyed as it is dropped: nothing was queued
