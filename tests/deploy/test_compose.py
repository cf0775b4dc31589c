"""deploy/compose.yaml, checked without a Docker daemon: against the Compose Specification's
JSON schema (as check-jsonschema ships it), and for what `docker compose up` needs to start the
system in order."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from oms_platform.settings import SERVICES, Settings
from oms_tools.cli.processes import KEY_FILES
from tests.deploy.files import DEPLOY, compose, oms_services, unknown_settings


def schema_errors(project: dict[str, Any]) -> list[str]:
    """What the Compose Specification's schema says is wrong with `project`."""
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    ).read_text()
    schema = json.loads(text)
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(project)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_catches_a_broken_file() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["capture"]["depends_on"]["migrate"]["condition"] = "service_done"
    broken["services"]["worker"]["deploy"]["replica"] = 2
    errors = schema_errors(broken)
    assert any("service_done" in e for e in errors)
    assert any("replica" in e for e in errors)


def test_every_process_of_the_system_runs_from_the_one_image() -> None:
    oms = oms_services(compose())
    for name in SERVICES:
        assert oms[name]["command"] == ["serve", name]
    assert oms["worker"]["command"] == ["worker"]
    assert oms["worker"]["deploy"]["replicas"] == 2
    assert oms["migrate"]["command"] == ["migrate"]
    assert oms["codec-server"]["command"] == ["codec-server"]
    assert oms["simulator"]["command"] == ["simulator"]
    assert oms["simulator"]["profiles"] == ["demo"]
    assert oms["capture"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / oms["capture"]["build"]["context"] / "deploy/Dockerfile").is_file()


def test_long_running_oms_processes_start_after_migrations_and_run_locked_down() -> None:
    project = compose()
    for name, service in oms_services(project).items():
        if "restart" not in service or service["restart"] != "unless-stopped":
            continue  # a one-shot job
        depends = service["depends_on"]
        chain = {name}
        # Directly or through what it depends on, every process waits for `migrate`.
        while "migrate" not in depends:
            (nxt,) = [d for d in depends if d not in chain]
            chain.add(nxt)
            depends = project["services"][nxt]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "oms-keys:/etc/oms/keys:ro" in service["volumes"], name


def test_dependencies_name_real_services_with_conditions_they_can_meet() -> None:
    project = compose()
    services = project["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if rule["condition"] == "service_completed_successfully":
                # A job that is restarted forever never completes.
                assert services[target].get("restart", "no") != "unless-stopped", target


def test_every_oms_variable_is_a_setting() -> None:
    names: set[str] = set()
    for service in oms_services(compose()).values():
        names |= set(service.get("environment", {}))
    assert names, "no OMS_ variables found: the check would pass vacuously"
    assert unknown_settings(names) == set()


def test_the_drift_check_names_a_variable_no_setting_reads() -> None:
    assert unknown_settings({"OMS_DATABSE_URL", "OMS_DATABASE_URL"}) == {"OMS_DATABSE_URL"}


def test_processes_are_pointed_at_the_files_the_keys_job_writes() -> None:
    project = compose()
    env = project["x-oms-env"]
    keys_job = project["services"]["keys"]
    assert "oms keys init --dir /etc/oms/keys" in keys_job["command"][0]
    for variable in ("OMS_AUTH_JWKS", "OMS_INTERNAL_SECRET_FILE", "OMS_CODEC_KEYS_FILE"):
        path = Path(env[variable])
        assert str(path.parent) == "/etc/oms/keys" and path.name in KEY_FILES, variable
    # What the simulator and the UI's token are signed with is the JWKS' private half.
    assert keys_job["environment"]["OMS_AUTH_SIGNING_KEY_FILE"] == "/etc/oms/keys/issuer.pem"


def test_services_are_reachable_where_their_peers_look_for_them() -> None:
    project = compose()
    env = project["x-oms-env"]
    defaults = Settings()
    for name in SERVICES:
        host, port = env[f"OMS_{name.upper()}_ADDRESS"].split(":")
        assert host == name and int(port) == defaults.port_of(name)
        assert f"{port}:{port}" in project["services"][name]["ports"]
    assert env["OMS_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert "@postgres:5432/" in env["OMS_DATABASE_URL"]


def test_the_temporal_ui_decodes_through_the_codec_server() -> None:
    project = compose()
    ui = project["services"]["temporal-ui"]
    codec = project["services"]["codec-server"]
    port = Settings().codec_server_port
    assert f"http://localhost:{port}/t/" in ui["command"][0]
    assert f"{port}:{port}" in codec["ports"]
    # Browsers load the UI from :8080 and call the codec server from that origin.
    assert codec["environment"]["OMS_CODEC_SERVER_CORS_ORIGINS"] == "http://localhost:8080"
    assert "8080:8080" in ui["ports"]


def test_prometheus_scrapes_every_oms_process_on_the_metrics_port() -> None:
    project = compose()
    port = int(project["x-oms-env"]["OMS_METRICS_PORT"])
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (oms_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "oms"]
    (dns,) = oms_job["dns_sd_configs"]
    assert dns["port"] == port
    assert set(dns["names"]) == {*SERVICES, "worker"}
    mounts = project["services"]["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in mounts


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        ("./grafana/provisioning:/etc/grafana/provisioning:ro", "provisioning"),
        ("./grafana/dashboards:/var/lib/grafana/dashboards:ro", "dashboards"),
    ],
)
def test_grafana_is_provisioned_from_this_folder(mount: str, expected: str) -> None:
    project = compose()
    assert mount in project["services"]["grafana"]["volumes"]
    assert (DEPLOY / "grafana" / expected).is_dir()
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/oms.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_processes_are_given_time_to_drain_before_they_are_killed() -> None:
    defaults = Settings()
    allowed = defaults.shutdown_not_serving_seconds + defaults.shutdown_grace_seconds
    for name, service in oms_services(compose()).items():
        if service.get("restart") == "unless-stopped":
            assert float(service["stop_grace_period"].removesuffix("s")) > allowed, name
