"""Where replicas listen in the dev stack, and how an address naming several becomes one
round-robin channel target (a single address stays exactly as it was)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from oms_platform.grpcutil import channel_target
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack import replicas
from oms_tools.devstack.stack import Stack


def test_a_single_address_is_used_as_it_is() -> None:
    assert channel_target("127.0.0.1:15051") == ("127.0.0.1:15051", [])
    assert channel_target("capture:15051") == ("capture:15051", [])
    assert channel_target("dns:///capture:15051") == ("dns:///capture:15051", [])


def test_several_ip_addresses_become_one_round_robin_target() -> None:
    target, options = channel_target("127.0.0.1:15051, 127.0.0.1:15151")
    assert target == "ipv4:127.0.0.1:15051,127.0.0.1:15151"
    assert ("grpc.lb_policy_name", "round_robin") in options
    assert ("grpc.default_authority", "127.0.0.1:15051") in options
    assert channel_target("[::1]:1,[::1]:2")[0] == "ipv6:[::1]:1,[::1]:2"


def test_a_list_of_names_or_of_mixed_families_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="dns:///name:port"):
        channel_target("capture-1:15051,capture-2:15051")
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        channel_target("127.0.0.1:1,[::1]:2")


def test_replica_k_listens_a_hundred_ports_above_the_previous_one() -> None:
    settings = Settings(dev_replicas=3)
    assert replicas.ports(settings, "capture") == [15051, 15151, 15251]
    assert replicas.addresses(settings, "payments") == (
        "127.0.0.1:15053,127.0.0.1:15153,127.0.0.1:15253"
    )
    one = Settings()
    assert replicas.with_replica_addresses(one) is one
    assert replicas.with_replica_addresses(settings).address_of("servicing") == (
        "127.0.0.1:15054,127.0.0.1:15154,127.0.0.1:15254"
    )


def test_the_cli_finds_the_running_stacks_replicas_unless_told_otherwise(tmp_path: Path) -> None:
    stack = replicas.with_replica_addresses(Settings(data_dir=str(tmp_path), dev_replicas=2))
    cli = Settings(data_dir=str(tmp_path))
    assert replicas.dev_client_settings(cli) == cli  # no stack running replicas

    replicas.mark_in_use(tmp_path, stack)
    found = replicas.dev_client_settings(cli)
    assert found.address_of("capture") == "127.0.0.1:15051,127.0.0.1:15151"
    explicit = Settings(data_dir=str(tmp_path), capture_address="10.0.0.9:15051")
    assert replicas.dev_client_settings(explicit).address_of("capture") == "10.0.0.9:15051"
    assert replicas.dev_client_settings(explicit).address_of("fulfillment") == (
        "127.0.0.1:15052,127.0.0.1:15152"
    )

    replicas.mark_in_use(tmp_path, None)  # the stack stopped
    assert replicas.dev_client_settings(cli) == cli


def test_each_replica_of_each_process_has_its_own_metrics_url_in_the_banner() -> None:
    settings = Settings(dev_replicas=3)
    banner = Stack(settings).banner()
    metrics_ports = [p for r in replicas.METRICS_ROLES for p in replicas.metrics_ports(settings, r)]
    assert len(metrics_ports) == 3 * 5 == len(set(metrics_ports))
    assert replicas.metrics_ports(settings, "worker") == [15094, 15194, 15294]
    for port in metrics_ports:
        assert f"http://127.0.0.1:{port}/metrics" in banner
    taken = {p for s in SERVICES for p in replicas.ports(settings, s)} | {
        settings.embedded_postgres_port,
        settings.embedded_temporal_port,
        settings.embedded_temporal_ui_port,
        settings.codec_server_port,
    }
    assert not taken & set(metrics_ports)
    assert replicas.metrics_ports(replace(settings, dev_metrics_port=0), "capture") == []
