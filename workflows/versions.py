"""How a change to the lifecycle's code reaches orders that are already running.

A change that would make a running order's history replay differently is guarded by a patch
(`workflow.patched(id)`): a run that started before the change keeps the old path, a new run
takes the new one. The SDK records every patch a run takes, and each costs the run a marker
and an upsert of the TemporalChangeVersion search attribute: two history events and one
visibility write on the Temporal server, for as long as the patch stays in the code.

A *baseline* folds patches in. Capture starts every lifecycle with the baseline of the code it
runs (`OrderLifecycleInput.baseline`, from `workflows.types.LIFECYCLE_BASELINE`). A run at a
baseline takes each patch folded into it without asking the SDK, so it records nothing for
them; a run started before (baseline 0, as in every history recorded before baselines existed)
asks as it always did, and replays unchanged. A patch made after the latest baseline is asked
for as usual until a later baseline folds it in too.

Deploying a new baseline: upgrade the workers before capture. A worker that does not know the
baseline would record the patches for a run capture started at it, and the upgraded worker
replaying that run would meet markers it no longer asks for (a nondeterminism error).
"""

from __future__ import annotations

from temporalio import workflow

# The lifecycle's patches, oldest first.
# A delivered order's run continues as new while it is serviced, once its history is long.
CONTINUE_AS_NEW = "continue-as-new-while-servicing"
# Search attributes for operators (total, currency, on hold, locations) upserted whenever one
# changes; runs before it upsert only status and channel, and only when the status changes.
OPERATOR_ATTRIBUTES = "operator-search-attributes"
# Every step runs as a local activity: the worker calls the service inside the workflow task,
# and the history keeps one marker per step instead of scheduled/started/completed and a
# workflow task to read the result. Runs before it keep scheduling remote activities.
LOCAL_ACTIVITIES = "local-activities"
# A shipment's invoice and its capture are one payments call (the capture keeps its own key);
# runs before it invoice and capture in two steps.
INVOICE_AND_CAPTURE = "invoice-and-capture"
# A credit memo and its refund are one payments call (the refund keeps its own key), and a
# cancel that leaves nothing to charge voids the authorizations in that call too; runs before
# it create, refund and void in separate calls.
CREDIT_MEMO_AND_REFUND = "credit-memo-and-refund"
# Progress reports to capture are batched: the reports a section of the lifecycle or an Update
# makes are recorded in one call when it ends, or before the workflow waits for anything, and
# the search attributes are upserted once with them; runs before it report each step (and
# upsert) as it happens.
BATCHED_PROGRESS = "batched-progress"
# A change (an Update) that arrives while warehouse or carrier events wait to be applied is
# checked and made after them: it sees the order capture already shows (a worker that died
# mid-task leaves events to apply again while capture has recorded them). Runs before it
# check against the workflow's state as it is.
QUEUED_EVENTS_FIRST = "changes-after-queued-events"
# Dunning (README "Subscriptions"): a subscription's cycle order whose payment is declined
# waits past due and retries on its `payment_retry_seconds`, and tells its subscription each
# outcome. Asked only for subscription orders, so no other order's history changes.
DUNNING = "dunning"
# The reports of the event that delivers the last unit are sent with the order's "fulfilled"
# report that follows, in one call; runs before it send them in two.
ONE_REPORT_AT_DELIVERY = "one-report-at-delivery"
# While an order waits on a backorder or pre-order, payments is asked to keep its holds until
# the promised day and the workflow sleeps until the next one falls due (a timer), renewing it
# then. Asked only while a fulfillment order with a promise date is open, so no other order's
# history changes.
RENEW_AHEAD_OF_PROMISE = "renew-authorizations-ahead-of-promise"
# A cancel of everything that reaches the lifecycle with its start no longer ends it with
# nothing else: an earlier attempt of the first workflow task may have routed the order before
# it was lost (its markers never recorded), so fulfillment is asked to cancel the order's open
# fulfillment orders, releasing their reservations (one call; none to cancel is the common
# case), and the timeline is told of any it canceled. The hold such an attempt placed needs no
# step of its own: the cancel's credit memo releases it from the order's authorizations and
# voids what remains. Asked only on that path, so no other order's history changes; runs
# before it end there as they always did.
RELEASE_BEFORE_START = "release-what-a-lost-first-task-held"
# A ship-to-store fulfillment order whose transfer left for the store on another day than
# planned is promised again from that day (fulfillment's "transfer_repromised" signal), and
# capture's order follows. Asked only when that signal arrives, so no other order's history
# changes; runs before it ignore the signal (a worker of the older code may have already).
REPROMISE_ON_TRANSFER = "repromise-on-ship-to-store"

# A void's key carries the workflow task that asks it (the history's length when the task
# started). A change's other steps keep keys of the change alone, so a task that dies and is
# retried still has one memo and one refund; but a cancel attempted in a task that *failed*
# (Temporal drops the task's Updates and the caller's retry meets a later task) may have
# voided before the lifecycle authorized, and the retry's void, under the same key, would be
# answered with that first void and leave the new hold. A void releases only what is still
# held, so asking it again under a new key is always safe. Runs before it key the void by
# the order alone.
VOID_PER_TASK = "void-keyed-by-workflow-task"

# What each baseline folds in, by baseline (a baseline takes its own and every earlier one's).
# Baseline 1: every patch made before baselines.
FOLDED: dict[int, frozenset[str]] = {
    1: frozenset(
        {
            CONTINUE_AS_NEW,
            OPERATOR_ATTRIBUTES,
            LOCAL_ACTIVITIES,
            INVOICE_AND_CAPTURE,
            CREDIT_MEMO_AND_REFUND,
            BATCHED_PROGRESS,
            QUEUED_EVENTS_FIRST,
            DUNNING,
        }
    ),
    2: frozenset({ONE_REPORT_AT_DELIVERY, RENEW_AHEAD_OF_PROMISE}),
}


def has_change(baseline: int, patch_id: str) -> bool:
    """Whether the current run takes the change `patch_id` guards: always when the run's
    baseline folds it in, otherwise as `workflow.patched` answers (and records)."""
    if any(patch_id in FOLDED[b] for b in FOLDED if b <= baseline):
        return True
    return workflow.patched(patch_id)
