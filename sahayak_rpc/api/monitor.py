"""MonitorService: server status (this issue); monitoring comes later."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.ingest import Ingest
from .._proto.sahayak.v1 import monitor_pb2, monitor_pb2_grpc
from . import convert

PAGE = 500


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog, ingest: Ingest, implemented: Callable[[], list[str]], version: str) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._ingest = ingest
        self._implemented = implemented
        self._version = version

    def GetServerStatus(self, request: monitor_pb2.GetServerStatusRequest, context: grpc.ServicerContext) -> monitor_pb2.GetServerStatusResponse:
        now = self._ctx.clock.now()
        response = monitor_pb2.GetServerStatusResponse(
            server_version=self._version,
            start_time=convert.us_to_ts(int(self._ctx.started_at * 1e6)),
            uptime=convert.s_to_duration(max(0.0, now - self._ctx.started_at)),
            queues=monitor_pb2.QueueDepths(),
            implemented_methods=self._implemented(),
        )
        after = ""
        while True:
            records, after = self._catalog.list(PAGE, after)
            for record in records:
                since = self._ingest.labels_since_training(record)
                every = record.settings.training.incremental_every
                response.models.add(
                    model=record.name,
                    outcome_count=self._ctx.outcomes.count(record.id),
                    labels_since_training=since,
                    labels_until_incremental=max(0, every - since) if every else 0,
                )
            if not after:
                return response
