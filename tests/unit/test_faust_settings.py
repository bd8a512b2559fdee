"""Faust runtime settings from driftline's (librdkafka) config: translated, or refused by name."""

from __future__ import annotations

import doctest
import ssl

import faust
import pytest

import consumers.faust_settings
from consumers.faust_app import LABELS_AGENT_NAME, mount_driftline, mount_driftline_labels
from consumers.faust_settings import faust_app_settings
from detectors.stores.memory_store import MemoryWindowStore
from driftline.cli import layout_from_config
from driftline.config import ConfigError, parse_config


def test_doctests_hold() -> None:
    # consumers/ is not among pytest's doctest paths; the module's example must stay true.
    assert doctest.testmod(consumers.faust_settings).failed == 0


def test_timeouts_client_and_group_instance_are_translated() -> None:
    config = parse_config(
        {
            "kafka": {
                "bootstrap_servers": "a:1, b:2",
                "group_id": "payments",
                "client": {"client.id": "driftline-7"},
                "consumer": {
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": "1000",
                    "max.poll.interval.ms": 300000,
                    "group.instance.id": "worker-3",
                    "auto.offset.reset": "largest",
                },
            }
        }
    )
    settings = faust_app_settings(config)
    assert settings["broker"] == ["kafka://a:1", "kafka://b:2"]
    assert settings["broker_session_timeout"] == 6.0
    assert settings["broker_heartbeat_interval"] == 1.0
    assert settings["broker_max_poll_interval"] == 300.0
    assert settings["broker_client_id"] == "driftline-7"
    assert settings["consumer_group_instance_id"] == "worker-3"
    assert settings["consumer_auto_offset_reset"] == "latest"
    # The app is a consumer only: no declared topics, no leader topic, no web server.
    assert settings["topic_allow_declare"] is False
    assert settings["topic_disable_leader"] is True
    assert settings["web_enabled"] is False
    app = faust.App("payments", **settings)
    assert app.conf.broker_session_timeout == 6.0
    assert app.conf.consumer_group_instance_id == "worker-3"


def test_sasl_over_tls_becomes_faust_credentials() -> None:
    config = parse_config(
        {
            "kafka": {
                "client": {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": "driftline",
                    "sasl.password": "s3cret",
                }
            }
        }
    )
    credentials = faust_app_settings(config)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("driftline", "s3cret")
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_plaintext_has_no_credentials() -> None:
    assert "broker_credentials" not in faust_app_settings(parse_config({}))


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        (
            {"consumer": {"fetch.min.bytes": 1}},
            "kafka.consumer.fetch.min.bytes = 1: not supported by the faust runtime",
        ),
        (
            {"client": {"socket.keepalive.enable": True}},
            "kafka.client.socket.keepalive.enable = True: not supported by the faust runtime",
        ),
        (
            {"consumer": {"session.timeout.ms": "6s"}},
            "kafka.consumer.session.timeout.ms = '6s': expected milliseconds",
        ),
        (
            {"consumer": {"auto.offset.reset": "error"}},
            "kafka.consumer.auto.offset.reset = 'error': expected one of",
        ),
        (
            {"client": {"security.protocol": "KERBEROS"}},
            "kafka.client.security.protocol = 'KERBEROS': expected PLAINTEXT, SSL",
        ),
    ],
)
def test_untranslatable_settings_are_refused_by_key_and_value(
    kafka: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        faust_app_settings(parse_config({"kafka": kafka}))
    assert str(raised.value).startswith(message)


def test_mounting_on_an_app_of_another_group_is_refused() -> None:
    config = parse_config({"kafka": {"group_id": "driftline"}})
    app = faust.App("payments", broker="kafka://127.0.0.1:1", web_enabled=False)
    with pytest.raises(ConfigError, match=r"kafka.group_id = 'driftline': must equal .*'payments'"):
        mount_driftline(app, config)
    assert not app.agents, "nothing is registered on a refused app"


def test_the_labels_agent_needs_an_app_of_the_labels_group() -> None:
    config = parse_config({"kafka": {"group_id": "driftline"}})
    store = MemoryWindowStore(layout_from_config(config))
    events_app = faust.App("driftline", broker="kafka://127.0.0.1:1", web_enabled=False)
    with pytest.raises(
        ConfigError, match=r"kafka.group_id = 'driftline-labels': must equal .*'driftline'"
    ):
        mount_driftline_labels(
            events_app, config, store=MemoryWindowStore(layout_from_config(config))
        )
    assert not events_app.agents

    labels_app = faust.App("driftline-labels", broker="kafka://127.0.0.1:1", web_enabled=False)
    mount_driftline_labels(labels_app, config, store=store)
    assert list(labels_app.agents) == [LABELS_AGENT_NAME]
    [agent] = labels_app.agents.values()
    assert list(agent.channel.topics) == [config.topics.labels]
