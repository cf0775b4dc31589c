"""The dunning schedule setting: seconds after the first decline, increasing."""

from __future__ import annotations

import pytest

from oms_platform.settings import Settings


def test_the_default_schedule_retries_one_three_and_seven_days_after_the_decline() -> None:
    assert Settings.from_env(env={}).dunning_retry_seconds == [86400, 259200, 604800]


def test_a_schedule_is_read_from_the_environment() -> None:
    env = {"OMS_SUBSCRIPTION_DUNNING_RETRY_SECONDS": "60, 180"}
    assert Settings.from_env(env=env).dunning_retry_seconds == [60, 180]


@pytest.mark.parametrize("raw", ["", "60,30", "0,60", "60,60", "a day"])
def test_a_schedule_that_is_not_increasing_positive_seconds_is_refused(raw: str) -> None:
    settings = Settings.from_env(env={"OMS_SUBSCRIPTION_DUNNING_RETRY_SECONDS": raw})
    with pytest.raises(ValueError, match="OMS_SUBSCRIPTION_DUNNING_RETRY_SECONDS"):
        _ = settings.dunning_retry_seconds
