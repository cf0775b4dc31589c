"""gRPC edge of the servicing service: converts wire <-> domain and delegates."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import grpc
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform import auth, erasure, limits
from oms_platform.db import idempotent, request_fingerprint
from oms_platform.errors import AlreadyExists, PermissionDenied
from oms_platform.wire import timestamp_to_datetime
from services.servicing import convert, domain, handlers, returns
from services.servicing.addresses import FulfillmentRouting
from services.servicing.lifecycles import Orders, reachable
from services.servicing.store import PERSONAL_COLUMNS, ProcessExceptionStore
from workflows.types import order_workflow_id


class ServicingServicer(servicing_pb2_grpc.ServicingServiceServicer):
    """ServicingService over servicing's stores and the order workflows."""

    def __init__(
        self,
        store: ProcessExceptionStore,
        resolution_grace: timedelta,
        orders: Orders,
        dead_letters: handlers.DeadLetters,
        return_cases: returns.Returns,
        routing: FulfillmentRouting,
    ) -> None:
        # The change and return order stores and the order workflows are the return cases'.
        self._return_cases = return_cases
        self._orders = orders
        self._dead_letters = dead_letters
        self._store = store
        self._resolution_grace = resolution_grace
        self._routing = routing

    # ---- process exceptions -----------------------------------------------------------------

    async def RecordProcessException(
        self, request: pb.RecordProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordProcessExceptionResponse:
        command = convert.record_to_domain(request)
        domain.validate_record(command)
        principal = auth.current_principal()
        if not principal.has_any({auth.WORKFLOW}) and command.category != domain.DELIVERY_FAILED:
            # A service records only its outbox's delivery failures; the rest are the
            # workflow's to raise (and to wait on).
            raise PermissionDenied(
                f"{principal.subject} may record only delivery_failed process exceptions"
            )

        async def record(conn: asyncpg.Connection) -> domain.ProcessException:
            raised = domain.new_process_exception(command, str(uuid.uuid4()), datetime.now(UTC))
            return await self._store.insert(conn, raised)

        def encode(stored: domain.ProcessException) -> pb.RecordProcessExceptionResponse:
            return pb.RecordProcessExceptionResponse(
                process_exception=convert.process_exception_to_pb(stored)
            )

        response, _ = await idempotent(
            self._store.pool,
            domain.idempotency_key_for(command.order_id, command.idempotency_key),
            request,
            pb.RecordProcessExceptionResponse,
            record,
            encode,
        )
        return response

    async def GetProcessException(
        self, request: pb.GetProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProcessExceptionResponse:
        exception = await self._store.get(request.process_exception_id)
        return pb.GetProcessExceptionResponse(
            process_exception=convert.process_exception_to_pb(exception)
        )

    async def ListProcessExceptions(
        self, request: pb.ListProcessExceptionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProcessExceptionsResponse:
        query = domain.list_query(
            order_id=request.order_id,
            statuses=[convert.enum_name(convert.STATUS_TO_DOMAIN, s) for s in request.statuses],
            categories=[
                convert.enum_name(convert.CATEGORY_TO_DOMAIN, c) for c in request.categories
            ],
            page_size=request.page_size,
            page_token=request.page_token,
            severities=[
                convert.enum_name(convert.SEVERITY_TO_DOMAIN, s) for s in request.severities
            ],
            created_before=(
                timestamp_to_datetime(request.created_before, "created_before")
                if request.HasField("created_before")
                else None
            ),
        )
        page = domain.page_of(query, await self._store.list(query))
        return pb.ListProcessExceptionsResponse(
            process_exceptions=[
                convert.process_exception_to_pb(e) for e in page.process_exceptions
            ],
            next_page_token=domain.next_page_token(query, page),
        )

    async def ResolveProcessException(
        self, request: pb.ResolveProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveProcessExceptionResponse:
        resolve = domain.Resolve(
            process_exception_id=request.process_exception_id,
            action=convert.enum_name(convert.ACTION_TO_DOMAIN, request.action),
            note=request.note,
            actor=auth.actor(),
        )
        exception = await reachable(
            context,
            handlers.resolve_process_exception(
                self._store,
                self._return_cases.lifecycles,
                resolve,
                self._resolution_grace,
                self._dead_letters,
            ),
        )
        return pb.ResolveProcessExceptionResponse(
            process_exception=convert.process_exception_to_pb(exception)
        )

    async def UpdateProcessExceptionStatus(
        self, request: pb.UpdateProcessExceptionStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateProcessExceptionStatusResponse:
        update = domain.StatusUpdate(
            process_exception_id=request.process_exception_id,
            status=convert.enum_name(convert.STATUS_TO_DOMAIN, request.status),
            note=request.note,
            actor=auth.actor(),
        )
        exception = await handlers.update_process_exception_status(self._store, update)
        return pb.UpdateProcessExceptionStatusResponse(
            process_exception=convert.process_exception_to_pb(exception)
        )

    async def EscalateProcessException(
        self, request: pb.EscalateProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.EscalateProcessExceptionResponse:
        escalate = domain.Escalate(
            request.process_exception_id, request.idempotency_key, request.message
        )
        domain.validate_escalation(escalate)

        async def escalate_it(conn: asyncpg.Connection) -> domain.ProcessException:
            exception = await self._store.get(escalate.process_exception_id, conn, for_update=True)
            changed = domain.escalated(exception, escalate, datetime.now(UTC))
            if changed is not exception:
                exception = await self._store.update(conn, changed)
            return exception

        def encode(exception: domain.ProcessException) -> pb.EscalateProcessExceptionResponse:
            return pb.EscalateProcessExceptionResponse(
                process_exception=convert.process_exception_to_pb(exception)
            )

        response, _ = await idempotent(
            self._store.pool,
            domain.escalation_key_for(escalate.process_exception_id, escalate.idempotency_key),
            request,
            pb.EscalateProcessExceptionResponse,
            escalate_it,
            encode,
        )
        return response

    # ---- return orders ----------------------------------------------------------------------

    async def CreateReturnOrder(
        self, request: pb.CreateReturnOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateReturnOrderResponse:
        command = domain.NewReturnOrder(
            order_id=request.order_id,
            idempotency_key=request.idempotency_key,
            return_order_id=request.return_order_id,
            reason=request.reason,
            lines=convert.items(request.lines),
        )
        domain.validate_new_return_order(command)
        return_orders = self._return_cases.returns

        async def create(conn: asyncpg.Connection) -> domain.ReturnOrder:
            rma = domain.new_return_order(command, datetime.now(UTC))
            if not await return_orders.insert(conn, rma):
                raise AlreadyExists(
                    "return_order_id", f"return order {limits.echo(rma.id)} exists already"
                )
            return rma

        def encode_created(rma: domain.ReturnOrder) -> pb.CreateReturnOrderResponse:
            return pb.CreateReturnOrderResponse(return_order=convert.return_order_to_pb(rma))

        response, _ = await idempotent(
            return_orders.pool,
            domain.return_order_key_for(command.order_id, command.idempotency_key),
            request,
            pb.CreateReturnOrderResponse,
            create,
            encode_created,
        )
        return response

    async def RecordReturnReceipt(
        self, request: pb.RecordReturnReceiptRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordReturnReceiptResponse:
        receipt = domain.Receipt(
            order_id=request.order_id,
            idempotency_key=request.idempotency_key,
            return_order_id=request.return_order_id,
            accepted=convert.items(request.accepted),
            rejected=convert.items(request.rejected),
            reason=request.reason,
        )
        domain.validate_receipt(receipt)
        return_orders = self._return_cases.returns

        async def record(conn: asyncpg.Connection) -> domain.ReturnOrder:
            rma = await return_orders.get(receipt.return_order_id, conn, for_update=True)
            after = domain.received(rma, receipt, datetime.now(UTC))
            await return_orders.save(conn, after)
            return after

        def encode_received(rma: domain.ReturnOrder) -> pb.RecordReturnReceiptResponse:
            return pb.RecordReturnReceiptResponse(return_order=convert.return_order_to_pb(rma))

        response, _ = await idempotent(
            return_orders.pool,
            domain.receipt_key_for(receipt.order_id, receipt.idempotency_key),
            request,
            pb.RecordReturnReceiptResponse,
            record,
            encode_received,
        )
        return response

    async def ListReturnOrders(
        self, request: pb.ListReturnOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReturnOrdersResponse:
        rmas = await self._return_cases.returns.list(request.order_id)
        return pb.ListReturnOrdersResponse(
            return_orders=[convert.return_order_to_pb(r) for r in rmas]
        )

    async def GetReturnLabel(
        self, request: pb.GetReturnLabelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReturnLabelResponse:
        # Confined before the carrier is asked: a caller refused the order moves nothing.
        label = await self._return_cases.labels.get(request.return_order_id)
        await self._confine(context, label.order_id)
        label = await returns.tracked(self._return_cases, label)
        return pb.GetReturnLabelResponse(label=convert.label_to_pb(label), pdf=label.pdf)

    # ---- return policies --------------------------------------------------------------------

    async def UpsertReturnPolicyRule(
        self, request: pb.UpsertReturnPolicyRuleRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertReturnPolicyRuleResponse:
        rule = convert.rule_to_domain(request.rule)
        stored = await returns.upsert_rule(self._return_cases, rule, auth.actor())
        return pb.UpsertReturnPolicyRuleResponse(rule=convert.rule_to_pb(stored))

    async def ListReturnPolicyRules(
        self, request: pb.ListReturnPolicyRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReturnPolicyRulesResponse:
        ordered = await returns.rules(self._return_cases)
        return pb.ListReturnPolicyRulesResponse(rules=[convert.rule_to_pb(s) for s in ordered])

    async def DeleteReturnPolicyRule(
        self, request: pb.DeleteReturnPolicyRuleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteReturnPolicyRuleResponse:
        deleted = await returns.delete_rule(self._return_cases, request.rule_id)
        return pb.DeleteReturnPolicyRuleResponse(deleted=deleted)

    async def SetProductCategories(
        self, request: pb.SetProductCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetProductCategoriesResponse:
        pairs = [(c.sku.strip(), c.category.strip()) for c in request.categories]
        changed = await returns.set_categories(self._return_cases, pairs)
        return pb.SetProductCategoriesResponse(changed=changed)

    async def ListProductCategories(
        self, request: pb.ListProductCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProductCategoriesResponse:
        pairs = await self._return_cases.policies.categories(request.category.strip())
        return pb.ListProductCategoriesResponse(
            categories=[pb.ProductCategory(sku=sku, category=c) for sku, c in pairs]
        )

    async def CheckReturnEligibility(
        self, request: pb.CheckReturnEligibilityRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckReturnEligibilityResponse:
        question = convert.eligibility_request_to_domain(request)
        await self._confine(context, question.order_id)
        answer = await reachable(context, returns.check_eligibility(self._return_cases, question))
        return convert.eligibility_to_pb(answer)

    # ---- changes ----------------------------------------------------------------------------

    async def _confine(self, context: grpc.aio.ServicerContext, order_id: str) -> None:
        """A storefront asks for changes only to its own channels' orders."""
        if auth.current_principal().sees_every_channel() or not order_id:
            return
        channel = await reachable(context, self._orders.channel_of(order_id))
        auth.require_channel(channel, f"order {order_id}")

    async def _submit(
        self,
        context: grpc.aio.ServicerContext,
        order: domain.ChangeOrder,
        request: Any,
        use_case: Callable[[domain.ChangeOrder, bytes], Awaitable[domain.Change]] | None = None,
    ) -> pb.Change:
        """Make a change to an order the caller may change (`_confine`) with `use_case`
        (default: handlers.submit_change, the order's workflow as it is); UNAVAILABLE when the
        workflow cannot be reached now."""
        cases = self._return_cases
        submit = use_case or partial(
            handlers.submit_change, cases.changes, cases.returns, cases.lifecycles
        )
        await self._confine(context, order.order_id)
        change = await reachable(context, submit(order, request_fingerprint(request)))
        return convert.change_to_pb(change)

    async def _preview(
        self,
        context: grpc.aio.ServicerContext,
        order: domain.ChangeOrder,
        use_case: Callable[[domain.ChangeOrder], Awaitable[domain.ChangeOutcome]] | None = None,
    ) -> pb.ChangeOutcome:
        """What a change would do (nothing is kept), asked with `use_case` (default:
        handlers.preview_change, the order's workflow as it is) as `_submit` asks."""
        preview = use_case or partial(handlers.preview_change, self._return_cases.lifecycles)
        await self._confine(context, order.order_id)
        return convert.outcome_to_pb(await reachable(context, preview(order)))

    async def PreviewCancel(
        self, request: pb.PreviewCancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewCancelResponse:
        return pb.PreviewCancelResponse(
            preview=await self._preview(context, convert.cancel_preview_to_domain(request))
        )

    async def SubmitCancel(
        self, request: pb.SubmitCancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitCancelResponse:
        return pb.SubmitCancelResponse(
            change=await self._submit(context, convert.cancel_to_domain(request), request)
        )

    async def PreviewReturn(
        self, request: pb.PreviewReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewReturnResponse:
        # Asked of the return policy first (its restocking fee withheld).
        return pb.PreviewReturnResponse(
            preview=await self._preview(
                context,
                convert.return_preview_to_domain(request),
                partial(returns.preview_under_policy, self._return_cases),
            )
        )

    async def SubmitReturn(
        self, request: pb.SubmitReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitReturnResponse:
        order = convert.return_to_domain(request)
        await self._confine(context, order.order_id)
        change, label = await reachable(
            context,
            returns.submit_return(self._return_cases, order, request_fingerprint(request)),
        )
        return pb.SubmitReturnResponse(
            change=convert.change_to_pb(change),
            label=convert.label_to_pb(label) if label is not None else None,
        )

    async def ReceiveReturn(
        self, request: pb.ReceiveReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveReturnResponse:
        if request.location_id:
            # A warehouse restocks only at its own locations.
            auth.require_location(request.location_id, "the receiving location")
        change, rma, restocked = await reachable(
            context,
            returns.receive_return(
                self._return_cases,
                convert.receive_to_domain(request),
                request.location_id,
                request_fingerprint(request),
            ),
        )
        return pb.ReceiveReturnResponse(
            change=convert.change_to_pb(change),
            return_order=convert.return_order_to_pb(rma),
            restocked=[
                pb.ItemQuantity(order_line_id=i.order_line_id, quantity=i.quantity)
                for i in restocked
            ],
        )

    async def SubmitExchange(
        self, request: pb.SubmitExchangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitExchangeResponse:
        # An exchange is a return of the old item: the return policy is asked first, and its
        # return order gets a label as a return's does.
        order = convert.exchange_to_domain(request)
        await self._confine(context, order.order_id)
        change, label = await reachable(
            context,
            returns.submit_exchange(self._return_cases, order, request_fingerprint(request)),
        )
        return pb.SubmitExchangeResponse(
            change=convert.change_to_pb(change),
            label=convert.label_to_pb(label) if label is not None else None,
        )

    async def PreviewExchange(
        self, request: pb.PreviewExchangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewExchangeResponse:
        return pb.PreviewExchangeResponse(
            preview=await self._preview(
                context,
                convert.exchange_to_domain(request),
                partial(returns.preview_under_policy, self._return_cases),
            )
        )

    async def PreviewReship(
        self, request: pb.PreviewReshipRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewReshipResponse:
        return pb.PreviewReshipResponse(
            preview=await self._preview(context, convert.reship_to_domain(request))
        )

    async def SubmitReship(
        self, request: pb.SubmitReshipRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitReshipResponse:
        return pb.SubmitReshipResponse(
            change=await self._submit(context, convert.reship_to_domain(request), request)
        )

    async def PreviewAddressChange(
        self, request: pb.PreviewAddressChangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewAddressChangeResponse:
        # Fulfillment's routing says where the group's unshipped units would ship from.
        return pb.PreviewAddressChangeResponse(
            preview=await self._preview(
                context,
                convert.address_change_to_domain(request),
                partial(
                    handlers.preview_address_change, self._return_cases.lifecycles, self._routing
                ),
            )
        )

    async def SubmitAddressChange(
        self, request: pb.SubmitAddressChangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitAddressChangeResponse:
        return pb.SubmitAddressChangeResponse(
            change=await self._submit(context, convert.address_change_to_domain(request), request)
        )

    async def PreviewAppeasement(
        self, request: pb.PreviewAppeasementRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewAppeasementResponse:
        return pb.PreviewAppeasementResponse(
            preview=await self._preview(context, convert.appeasement_to_domain(request))
        )

    async def SubmitAppeasement(
        self, request: pb.SubmitAppeasementRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitAppeasementResponse:
        return pb.SubmitAppeasementResponse(
            change=await self._submit(context, convert.appeasement_to_domain(request), request)
        )

    async def PreviewAddItems(
        self, request: pb.PreviewAddItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewAddItemsResponse:
        return pb.PreviewAddItemsResponse(
            preview=await self._preview(context, convert.add_items_to_domain(request))
        )

    async def SubmitAddItems(
        self, request: pb.SubmitAddItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitAddItemsResponse:
        return pb.SubmitAddItemsResponse(
            change=await self._submit(context, convert.add_items_to_domain(request), request)
        )

    # ---- personal data ----------------------------------------------------------------------

    async def ErasePersonalData(
        self, request: pb.ErasePersonalDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ErasePersonalDataResponse:
        changed = await erasure.erase_orders(
            self._store.pool,
            PERSONAL_COLUMNS,
            request.order_ids,
            [order_workflow_id(o) for o in request.order_ids],
            request.identifying_text,
        )
        return pb.ErasePersonalDataResponse(records_erased=changed)

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChangesResponse:
        changes = await self._return_cases.changes.list(request.order_id)
        return pb.ListChangesResponse(changes=[convert.change_to_pb(c) for c in changes])
