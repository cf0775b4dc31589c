"""The search attributes the order workflow sets, part of its contract with operators (the
Temporal UI's filters) and with capture (which finds an order's run by status). Apart from
`types.py` so the contract's data types stay free of the SDK.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

# Search attributes: indexed in clear by Temporal, so none of them may hold personal data.
ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
ORDER_CHANNEL = SearchAttributeKey.for_keyword("OrderChannel")
# The order's grand total in minor units of OrderCurrency (grows when items are added).
ORDER_TOTAL_MINOR = SearchAttributeKey.for_int("OrderTotalMinor")
ORDER_CURRENCY = SearchAttributeKey.for_keyword("OrderCurrency")
# True while the order waits on a process exception for an agent.
ORDER_ON_HOLD = SearchAttributeKey.for_bool("OnHold")
# Every location a fulfillment order of the order went to.
LOCATION_IDS = SearchAttributeKey.for_keyword_list("LocationIds")
