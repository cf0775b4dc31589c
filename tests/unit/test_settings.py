"""Settings: OMS_ variables override defaults with the field's type; addresses and the DSN."""

from __future__ import annotations

from dataclasses import fields

import pytest

from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.temporal_server import ephemeral_ports, free_port


def test_without_variables_every_default_applies() -> None:
    assert Settings.from_env(env={}) == Settings()


def test_an_int_variable_becomes_an_int() -> None:
    settings = Settings.from_env(env={"OMS_CAPTURE_PORT": "6001", "OMS_DB_POOL_MAX": " 3 "})

    assert settings.capture_port == 6001
    assert isinstance(settings.capture_port, int)
    assert settings.db_pool_max == 3
    assert settings.fulfillment_port == 15052  # untouched default


def test_a_float_variable_becomes_a_float() -> None:
    settings = Settings.from_env(
        env={"OMS_SIMULATOR_STEP_SECONDS": "0.05", "OMS_GET_ORDER_DEADLINE_SECONDS": "3"}
    )

    assert settings.simulator_step_seconds == 0.05
    assert settings.get_order_deadline_seconds == 3.0
    assert isinstance(settings.get_order_deadline_seconds, float)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_a_bool_variable_is_true_only_for_the_usual_words(raw: str, expected: bool) -> None:
    settings = Settings.from_env(env={"OMS_SIMULATOR": raw})

    assert settings.simulator is expected


def test_a_string_variable_is_taken_as_is() -> None:
    settings = Settings.from_env(env={"OMS_TASK_QUEUE": "orders-eu", "OMS_LOG_LEVEL": "debug"})

    assert (settings.task_queue, settings.log_level) == ("orders-eu", "debug")


def test_variables_without_the_prefix_or_unknown_names_are_ignored() -> None:
    settings = Settings.from_env(env={"CAPTURE_PORT": "1", "OMS_NOT_A_SETTING": "x"})

    assert settings == Settings()


def test_overrides_win_over_variables() -> None:
    settings = Settings.from_env(env={"OMS_CAPTURE_PORT": "6001"}, capture_port=7001)

    assert settings.capture_port == 7001


def test_the_process_environment_is_read_when_no_env_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMS_PAYMENTS_PORT", "6553")
    monkeypatch.setenv("OMS_GATEWAY_TRANSIENT_FAILURE_RATE", "0.25")

    settings = Settings.from_env()

    assert settings.payments_port == 6553
    assert settings.gateway_transient_failure_rate == 0.25


def test_an_unparsable_number_is_refused() -> None:
    with pytest.raises(ValueError):
        Settings.from_env(env={"OMS_CAPTURE_PORT": "fifty"})


def test_address_of_is_host_and_port_by_default() -> None:
    settings = Settings.from_env(env={"OMS_HOST": "10.0.0.5", "OMS_SERVICING_PORT": "6004"})

    assert settings.address_of("servicing") == "10.0.0.5:6004"
    assert settings.address_of("capture") == "10.0.0.5:15051"


def test_address_of_uses_an_explicit_address_when_set() -> None:
    settings = Settings.from_env(
        env={"OMS_PAYMENTS_ADDRESS": "payments.internal:443", "OMS_PAYMENTS_PORT": "6003"}
    )

    assert settings.address_of("payments") == "payments.internal:443"
    assert settings.port_of("payments") == 6003  # where it would listen is separate
    assert settings.address_of("capture") == "127.0.0.1:15051"


def test_every_service_has_an_address() -> None:
    settings = Settings()

    assert [settings.address_of(name) for name in SERVICES] == [
        "127.0.0.1:15051",
        "127.0.0.1:15052",
        "127.0.0.1:15053",
        "127.0.0.1:15054",
    ]


def test_dsn_uses_the_database_url_when_set() -> None:
    url = "postgresql://oms:secret@db.internal:5432/orders"

    assert Settings.from_env(env={"OMS_DATABASE_URL": url}).dsn == url


def test_dsn_points_at_the_embedded_postgres_otherwise() -> None:
    settings = Settings.from_env(env={"OMS_EMBEDDED_POSTGRES_PORT": "6543"})

    assert settings.dsn == "postgresql://postgres@127.0.0.1:6543/oms"


def test_temporal_target_prefers_the_external_address() -> None:
    assert Settings(embedded_temporal_port=7999).temporal_target == "127.0.0.1:7999"
    assert Settings(temporal_address="temporal:7233").temporal_target == "temporal:7233"


def test_settings_survive_a_trip_through_child_process_variables() -> None:
    original = Settings.from_env(
        env={},
        simulator=False,
        capture_port=6001,
        gateway_transient_failure_rate=0.1,
        database_url="postgresql://x@y/z",
    )

    env = original.as_env()

    assert env["OMS_SIMULATOR"] == "0"
    assert env["OMS_CAPTURE_PORT"] == "6001"
    assert Settings.from_env(env=env) == original


def test_every_default_port_of_the_stack_is_below_the_ephemeral_range() -> None:
    # A port the kernel may hand to an outgoing connection can be taken by a client's own
    # reconnect attempt while the server is down (issue 12).
    ephemeral = ephemeral_ports()
    ports = {
        f.name: getattr(Settings(), f.name) for f in fields(Settings) if f.name.endswith("_port")
    }

    assert {"embedded_postgres_port", "embedded_temporal_port", "capture_port"} <= ports.keys()
    assert all(port < ephemeral.start for port in ports.values()), ports


def test_free_ports_for_tests_come_from_below_the_ephemeral_range_too() -> None:
    for _ in range(20):
        assert free_port() < ephemeral_ports().start


def test_a_port_drawn_for_a_server_not_yet_started_is_not_drawn_again() -> None:
    # A session's settings draw ports long before their services bind them; a later draw in
    # the same process must not hand out one of those (it is still free to bind).
    drawn = [free_port() for _ in range(2000)]
    assert len(set(drawn)) == len(drawn)
