"""A subscription's statuses on the wire (oms.subscriptions.v1): the workflow reports them and
servicing serves them, from the one table here."""

from __future__ import annotations

from oms.subscriptions.v1 import subscriptions_pb2 as pb

from workflows import subscription_types as st

STATUS_TO_PB: dict[str, pb.SubscriptionStatus.ValueType] = {
    st.ACTIVE: pb.SUBSCRIPTION_STATUS_ACTIVE,
    st.PAUSED: pb.SUBSCRIPTION_STATUS_PAUSED,
    st.SUBSCRIPTION_PAST_DUE: pb.SUBSCRIPTION_STATUS_PAST_DUE,
    st.SUBSCRIPTION_CANCELED: pb.SUBSCRIPTION_STATUS_CANCELED,
}
CYCLE_STATUS_TO_PB: dict[str, pb.CycleStatus.ValueType] = {
    st.CYCLE_SCHEDULED: pb.CYCLE_STATUS_SCHEDULED,
    st.CYCLE_SKIPPED: pb.CYCLE_STATUS_SKIPPED,
    st.CYCLE_ORDERED: pb.CYCLE_STATUS_ORDERED,
    st.CYCLE_PAST_DUE: pb.CYCLE_STATUS_PAST_DUE,
    st.CYCLE_PAID: pb.CYCLE_STATUS_PAID,
    st.CYCLE_FAILED: pb.CYCLE_STATUS_FAILED,
}
