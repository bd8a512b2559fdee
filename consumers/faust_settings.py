"""Faust app settings from driftline's config, whose Kafka settings are librdkafka's.

``kafka.client`` and ``kafka.consumer`` hold librdkafka properties, passed through as they are
to the confluent-kafka runtime. The Faust runtime talks to Kafka through aiokafka, so the
properties it understands are translated here (timeouts, client id, TLS and SASL) and any other
is refused with its key and value: a setting silently dropped would make the two runtimes behave
differently without anyone noticing.

>>> from driftline.config import parse_config
>>> config = parse_config({"kafka": {"bootstrap_servers": "k1:9092,k2:9092",
...                                  "consumer": {"session.timeout.ms": 6000}}})
>>> settings = faust_app_settings(config)
>>> settings["broker"], settings["broker_session_timeout"]
(['kafka://k1:9092', 'kafka://k2:9092'], 6.0)
>>> faust_app_settings(parse_config({"kafka": {"consumer": {"fetch.min.bytes": 1}}}))
...     # doctest: +ELLIPSIS
Traceback (most recent call last):
...
driftline.config.ConfigError: kafka.consumer.fetch.min.bytes = 1: not supported by the faust ...
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust

from driftline.config import Config, ConfigError

__all__ = ["faust_app_settings"]

_SECONDS_FROM_MS = {
    "session.timeout.ms": "broker_session_timeout",
    "heartbeat.interval.ms": "broker_heartbeat_interval",
    "max.poll.interval.ms": "broker_max_poll_interval",
}
_SECURITY = {
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
}
_SUPPORTED = sorted(
    {*_SECONDS_FROM_MS, *_SECURITY, "client.id", "group.instance.id", "auto.offset.reset"}
)


def faust_app_settings(config: Config) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` that make it a driftline consumer of ``config``.

    No tables and no topics of its own (state is in Redis; the events topic already exists), no
    web server (the evaluator serves ``/metrics``), and a new group starts from the earliest
    offset, as the confluent runtime does.
    """
    settings: dict[str, Any] = {
        "broker": [
            f"kafka://{server.strip()}"
            for server in config.kafka.bootstrap_servers.split(",")
            if server.strip()
        ],
        "store": "memory://",
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": False,
        # Faust makes an app directory even when nothing is stored in it; keep it out of the cwd.
        "datadir": str(Path(tempfile.gettempdir()) / "driftline-faust"),
    }
    librdkafka = {
        **{("client", key): value for key, value in config.kafka.client.items()},
        **{("consumer", key): value for key, value in config.kafka.consumer.items()},
    }
    security: dict[str, str] = {}
    for (section, key), value in librdkafka.items():
        if key in _SECONDS_FROM_MS:
            settings[_SECONDS_FROM_MS[key]] = _milliseconds(section, key, value) / 1000
        elif key == "client.id":
            settings["broker_client_id"] = str(value)
        elif key == "group.instance.id":
            settings["consumer_group_instance_id"] = str(value)
        elif key == "auto.offset.reset":
            settings["consumer_auto_offset_reset"] = _offset_reset(section, key, value)
        elif key in _SECURITY:
            security[key] = str(value)
        else:
            raise ConfigError(
                f"kafka.{section}.{key} = {value!r}: not supported by the faust runtime "
                f"(supported: {', '.join(_SUPPORTED)})"
            )
    credentials = _credentials(security)
    if credentials is not None:
        settings["broker_credentials"] = credentials
    return settings


def _milliseconds(section: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise ConfigError(f"kafka.{section}.{key} = {value!r}: expected milliseconds (an integer)")
    return int(value)


def _offset_reset(section: str, key: str, value: object) -> str:
    # librdkafka's synonyms for the two policies aiokafka knows.
    policies = {
        "earliest": "earliest",
        "smallest": "earliest",
        "beginning": "earliest",
        "latest": "latest",
        "largest": "latest",
        "end": "latest",
    }
    if value not in policies:
        raise ConfigError(
            f"kafka.{section}.{key} = {value!r}: expected one of {', '.join(policies)}"
        )
    return policies[str(value)]


def _credentials(
    security: Mapping[str, str],
) -> faust.SASLCredentials | faust.SSLCredentials | None:
    protocol = security.get("security.protocol", "PLAINTEXT").upper()
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=security.get("ssl.ca.location"))
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism = security.get("sasl.mechanism", security.get("sasl.mechanisms", "PLAIN"))
        return faust.SASLCredentials(
            username=security.get("sasl.username"),
            password=security.get("sasl.password"),
            ssl_context=context,
            mechanism=mechanism.upper(),
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol != "PLAINTEXT":
        raise ConfigError(
            f"kafka.client.security.protocol = {security['security.protocol']!r}: expected "
            "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        )
    return None
