"""deploy/compose and deploy/k8s use only commands, flags, ports, env vars and config keys that the
code accepts (no Docker engine or cluster here: the files are parsed and checked against the
click CLI's own parameters and the pydantic config)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from alerting.rule_export import prometheus_rule_file
from alerting.webhook_receiver import PATH as WEBHOOK_PATH
from driftline.cli import main
from driftline.config import Config, parse_config
from tests.conftest import REPO

COMPOSE_DIR = REPO / "deploy" / "compose"
K8S_DIR = REPO / "deploy" / "k8s"
KAFKA_VERSION = re.search(
    r"^KAFKA_VERSION=(\S+)$", (REPO / "deploy/local/stack.sh").read_text(), re.MULTILINE
)


@dataclass
class Invocation:
    """One driftline process of a manifest."""

    where: str
    args: list[str]
    files: dict[str, str]  # container path -> content
    env: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)


def _command(args: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"{args}: a subcommand of {command.name} is missing"
        name = rest.pop(0)
        assert name in command.commands, f"{args}: `driftline {name}` does not exist"
        command = command.commands[name]
    return command, rest


def parse_invocation(args: list[str]) -> tuple[str, dict[str, Any]]:
    """The command's name and its option values, checked against its click parameters."""
    command, rest = _command(args)
    options = {
        opt: param
        for param in command.params
        if isinstance(param, click.Option)
        for opt in [*param.opts, *param.secondary_opts]
    }
    values: dict[str, Any] = {}
    while rest:
        token = rest.pop(0)
        name, _, inline = token.partition("=")
        assert name in options, f"{args}: {command.name} has no option {name}"
        param = options[name]
        if param.is_flag:
            values[str(param.name)] = name in param.opts
            continue
        raw = inline or rest.pop(0)
        if isinstance(param.type, click.Path):
            values[str(param.name)] = raw  # a path inside the container: resolved by mounts
        else:
            values[str(param.name)] = param.type.convert(raw, param, None)
    return str(command.name), values


def accepted_env(config: Config) -> set[str]:
    """Environment variables the config tells driftline to read (``*_env`` settings)."""
    found: set[str] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, str(name))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif key.endswith("_env") and isinstance(value, str):
            found.add(value)

    walk(config.model_dump(mode="json"))
    return found


def check_invocation(invocation: Invocation) -> tuple[str, dict[str, Any], Config]:
    name, values = parse_invocation(invocation.args)
    config_path = values.get("config_path")
    assert config_path in invocation.files, (
        f"{invocation.where}: --config {config_path} is not mounted"
    )
    config = parse_config(
        yaml.safe_load(invocation.files[config_path]), source=f"{invocation.where}: {config_path}"
    )
    unknown_env = invocation.env - accepted_env(config)
    assert not unknown_env, f"{invocation.where}: driftline reads no {sorted(unknown_env)}"
    if name == "evaluate":
        port = values.get("port") or config.evaluator.metrics_port
        assert config.evaluator.metrics_host == "0.0.0.0", invocation.where
        assert invocation.ports == {port}, (invocation.where, invocation.ports, port)
    elif name == "webhook":
        settings = config.alerting.webhook
        assert (values.get("host") or settings.host) == "0.0.0.0", invocation.where
        assert invocation.ports == {values.get("port") or settings.port}, invocation.where
        secret = settings.token_file
        if secret is not None:  # a compose secret is mounted at /run/secrets/<name>
            assert secret.startswith("/run/secrets/"), invocation.where
            assert secret.removeprefix("/run/secrets/") in invocation.secrets, invocation.where
        else:
            assert settings.token_env in invocation.env, invocation.where
    else:
        assert not invocation.ports, f"{invocation.where}: `driftline {name}` serves no port"
    return name, values, config


# ------------------------------------------------------------------------------------ compose


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    return loaded


def _compose_files(service: dict[str, Any]) -> dict[str, str]:
    files = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        path = (COMPOSE_DIR / source).resolve()
        assert path.exists(), f"compose mounts {source}, which does not exist"
        if path.is_file():
            files[target] = path.read_text(encoding="utf-8")
    return files


def _compose_invocations() -> list[Invocation]:
    found = []
    for name, service in _compose()["services"].items():
        if service.get("image", "").startswith("driftline"):
            assert service["build"] == {"context": "../..", "dockerfile": "Dockerfile"}, name
            ports = {int(str(port).split(":")[-1]) for port in service.get("ports", [])}
            found.append(
                Invocation(
                    f"compose {name}",
                    list(service["command"]),
                    _compose_files(service),
                    set(service.get("environment", {})),
                    ports,
                    set(service.get("secrets", [])),
                )
            )
    return found


def test_compose_runs_every_process_with_real_flags_and_config() -> None:
    checked = {check_invocation(invocation)[0]: invocation for invocation in _compose_invocations()}
    assert set(checked) == {"consume", "consume-labels", "evaluate", "webhook", "demo"}
    _, values = parse_invocation(checked["demo"].args)
    assert values["traffic_only"] is True
    services = _compose()["services"]
    target = urlsplit(values["metrics_url"])
    assert target.hostname in services and target.path == "/metrics"
    assert target.port in {int(p.split(":")[-1]) for p in services[target.hostname]["ports"]}


def test_compose_services_agree_with_the_driftline_config() -> None:
    services = _compose()["services"]
    [config_text] = set(_compose_files(services["evaluate"]).values()) & {
        (COMPOSE_DIR / "driftline.yaml").read_text(encoding="utf-8")
    }
    config = parse_config(yaml.safe_load(config_text))
    assert KAFKA_VERSION is not None
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION.group(1)}"
    host, port = config.kafka.bootstrap_servers.split(":")
    assert (
        host == "kafka"
        and f"INTERNAL://kafka:{port}"
        in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    redis_url = urlsplit(config.redis.url)
    assert redis_url.hostname in services and redis_url.port == 6379
    topics = " ".join(services["topics"]["command"])
    created = dict(re.findall(r"(driftline\.[a-z.-]+):(\d+)", topics))
    assert set(created) == {
        config.topics.events,
        config.topics.labels,
        config.topics.dead_letter,
        config.topics.control,
    }
    # Prometheus scrapes the evaluator and loads the rules exported from this very config.
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"evaluate:{config.evaluator.metrics_port}"]
    exported = yaml.safe_load((COMPOSE_DIR / "driftline-rules.yml").read_text())
    assert exported == prometheus_rule_file(config.rules, config.alerting), (
        "run `driftline rules export --config deploy/compose/driftline.yaml "
        "--out-dir deploy/compose`"
    )
    assert prometheus["rule_files"] == ["driftline-rules.yml"]
    assert (
        "./driftline-rules.yml:/etc/prometheus/driftline-rules.yml:ro"
        in services["prometheus"]["volumes"]
    )
    # Alertmanager calls the webhook receiver with the secret it checks.
    alertmanager = yaml.safe_load((COMPOSE_DIR / "alertmanager.yml").read_text())
    [receiver] = [r for r in alertmanager["receivers"] if r.get("webhook_configs")]
    [hook] = receiver["webhook_configs"]
    url = urlsplit(hook["url"])
    assert (url.hostname, url.port, url.path) == (
        "webhook",
        config.alerting.webhook.port,
        WEBHOOK_PATH,
    )
    assert hook["http_config"]["authorization"]["credentials_file"] == (
        config.alerting.webhook.token_file
    )
    assert "webhook_token" in services["alertmanager"]["secrets"]
    assert (COMPOSE_DIR / _compose()["secrets"]["webhook_token"]["file"]).exists()
    # Grafana gets the provisioning files and the dashboards where the provider looks.
    grafana = services["grafana"]["volumes"]
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/driftline.yml").read_text()
    )
    assert f"../grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in grafana
    datasource = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert urlsplit(datasource["datasources"][0]["url"]).hostname == "prometheus"


def test_dockerfile_entrypoint_is_the_cli() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["driftline"]' in dockerfile
    assert 'driftline = "driftline.cli:main"' in (REPO / "pyproject.toml").read_text()
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M)[0].split()}
    defaults = Config()
    assert exposed == {defaults.evaluator.metrics_port, defaults.alerting.webhook.port}
    for package in ("driftline", "consumers", "detectors", "alerting"):
        assert f"COPY {package} ./{package}" in dockerfile


# ------------------------------------------------------------------------------------ k8s


def _k8s() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _k8s() if doc["kind"] == kind]


def _configmap_files() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["data"] for doc in _kind("ConfigMap")}


def _k8s_invocations() -> list[tuple[dict[str, Any], Invocation]]:
    configmaps = _configmap_files()
    found = []
    for deployment in _kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["image"].split(":")[0] == "driftline", deployment["metadata"]
            files = {}
            for mount in container.get("volumeMounts", []):
                source = volumes[mount["name"]]["configMap"]["name"]
                for key, text in configmaps[source].items():
                    files[f"{mount['mountPath']}/{key}"] = text
            found.append(
                (
                    deployment,
                    Invocation(
                        f"k8s {deployment['metadata']['name']}",
                        list(container["args"]),
                        files,
                        {env["name"] for env in container.get("env", [])},
                        {port["containerPort"] for port in container.get("ports", [])},
                    ),
                )
            )
    return found


def test_k8s_deployments_run_real_commands_with_the_configmap() -> None:
    secrets = {doc["metadata"]["name"]: doc for doc in _kind("Secret")}
    by_command = {}
    for deployment, invocation in _k8s_invocations():
        name, _, config = check_invocation(invocation)
        by_command[name] = (deployment, config)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                reference = env["valueFrom"]["secretKeyRef"]
                assert reference["key"] in secrets[reference["name"]]["stringData"]
    assert set(by_command) == {"consume", "consume-labels", "evaluate", "webhook"}
    evaluate, config = by_command["evaluate"]
    # Two evaluators: one holds the Redis lease, the other waits (evaluator.lease_ttl_seconds).
    assert evaluate["spec"]["replicas"] == 2
    assert "lease_ttl_seconds" in type(config.evaluator).model_fields
    # Consumers beyond the partitions idle; the manifest says 4 = partitions of the events topic.
    assert by_command["consume"][0]["spec"]["replicas"] <= 4


def test_k8s_services_servicemonitor_and_prometheusrule_agree_with_the_pods() -> None:
    pods = {}
    for deployment, _ in _k8s_invocations():
        template = deployment["spec"]["template"]
        pods[deployment["metadata"]["name"]] = template
    services = {doc["metadata"]["name"]: doc for doc in _kind("Service")}
    for service in services.values():
        selector = service["spec"]["selector"]
        [pod] = [p for p in pods.values() if selector.items() <= p["metadata"]["labels"].items()]
        port_names = {port["name"] for c in pod["spec"]["containers"] for port in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, service["metadata"]["name"]
    [monitor] = _kind("ServiceMonitor")
    [scraped] = [
        s
        for s in services.values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in scraped["spec"]["ports"]
    ]
    assert scraped["metadata"]["name"] == "driftline-evaluate"
    [config_text] = _configmap_files()["driftline-config"].values()
    config = parse_config(yaml.safe_load(config_text))
    [rule] = _kind("PrometheusRule")
    assert rule["spec"] == prometheus_rule_file(config.rules, config.alerting), (
        "deploy/k8s/prometheusrule.yaml is not the export of the ConfigMap's rules"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "--config", "c.yaml", "--no-such-flag"],
        ["consume", "--runtime", "spark", "--config", "c.yaml"],
        ["serve", "--config", "c.yaml"],
        ["rules"],
    ],
)
def test_a_wrong_flag_command_or_choice_is_caught(args: list[str]) -> None:
    with pytest.raises((AssertionError, click.BadParameter)):
        parse_invocation(args)


def test_a_wrong_port_or_env_var_is_caught() -> None:
    [invocation] = [i for i in _compose_invocations() if i.args[0] == "evaluate"]
    invocation.ports = {9999}
    with pytest.raises(AssertionError):
        check_invocation(invocation)
    [invocation] = [i for _, i in _k8s_invocations() if i.args[0] == "webhook"]
    invocation.env.add("DRIFTLINE_WEBHOOK_SECRET")
    with pytest.raises(AssertionError, match="DRIFTLINE_WEBHOOK_SECRET"):
        check_invocation(invocation)
