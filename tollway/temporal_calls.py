"""Counts the calls a process makes to Temporal, by kind (a client interceptor): the API
exports them as ``tollway_temporal_calls`` so that operators, and ``make bench``, see how many
calls each request costs (one for a create, a view and a webhook)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client, Interceptor, OutboundInterceptor

_COUNTED = (
    "start_workflow",
    "start_update_with_start_workflow",
    "start_workflow_update",
    "query_workflow",
    "describe_workflow",
    "fetch_workflow_history_events",
    "list_workflows",
    "count_workflows",
    "signal_workflow",
    "cancel_workflow",
    "terminate_workflow",
)


class CallCounter(Interceptor):
    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Counting(next, self._count)


class _Counting(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, count: Callable[[str], None]) -> None:
        super().__init__(next)
        self._count = count


def _counted(name: str) -> Callable[..., Any]:
    def call(self: _Counting, input: Any) -> Any:
        self._count(name)
        return getattr(self.next, name)(input)

    call.__name__ = name
    return call


for _name in _COUNTED:
    setattr(_Counting, _name, _counted(_name))


def counter_of(client: Client) -> Callable[[str], None]:
    """The count of the client's :class:`CallCounter` (a no-op without one), for calls made
    on the workflow service directly, past the client's interceptors."""
    for interceptor in client.config()["interceptors"]:
        if isinstance(interceptor, CallCounter):
            return interceptor._count
    return _uncounted


def _uncounted(name: str) -> None:
    pass
