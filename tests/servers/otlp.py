"""A real OTLP/gRPC receiver for the tests: the collector's trace and metrics services, on loopback.

It accepts what OpenTelemetry exporters send (the Python SDK's and the Temporal Core's), keeps every
request, and answers as a collector would, so the tests see exactly what an operator's collector
would get. Run it alone with `python -m tests.servers.otlp` to watch a worker's telemetry.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

T = TypeVar("T")


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue (scalars, arrays and maps)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class Point:
    """One data point of one metric, flattened with its resource and kind."""

    metric: str
    kind: str  # sum | gauge | histogram | exponential_histogram | summary
    unit: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float  # sum/gauge value, or the histogram's sum
    count: int  # histogram count; 0 for sums and gauges
    bounds: tuple[float, ...] = ()


@dataclass
class Received:
    """Everything that arrived, in arrival order."""

    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)


def _export_service(
    service: ServiceDescriptor, keep: list[Any], lock: threading.Lock
) -> grpc.GenericRpcHandler:
    """A collector service whose one method, Export, keeps each request in `keep` and answers
    with an empty response, as a collector that accepted everything does."""
    method = service.methods_by_name["Export"]
    request, response = GetMessageClass(method.input_type), GetMessageClass(method.output_type)

    def export(message: Message, context: grpc.ServicerContext) -> Message:
        with lock:
            keep.append(message)
        return response()

    handler = grpc.unary_unary_rpc_method_handler(
        export,
        request_deserializer=request.FromString,
        response_serializer=response.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(service.full_name, {"Export": handler})


class OtlpReceiver:
    """An OTLP/gRPC collector endpoint on 127.0.0.1 with an OS-chosen port."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = Received()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        traces = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"]
        metrics = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"]
        self._server.add_generic_rpc_handlers(
            (
                _export_service(traces, self.received.traces, self.lock),
                _export_service(metrics, self.received.metrics, self.lock),
            )
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT is set to."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def spans(self) -> list[Span]:
        with self.lock:
            requests = list(self.received.traces)
        return [
            Span(
                name=span.name,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                kind=span.kind,
                attributes=attributes(span.attributes),
                resource=attributes(rs.resource.attributes),
                status_code=span.status.code,
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
            )
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def points(self) -> list[Point]:
        with self.lock:
            requests = list(self.received.metrics)
        return [
            point
            for request in requests
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            for point in _points(metric, attributes(rm.resource.attributes))
        ]

    def metric_names(self) -> set[str]:
        return {p.metric for p in self.points()}

    async def wait(self, found: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll until `found()` returns something truthy; fail with what did arrive.

        Async, so that the test's event loop (agents, subprocess pipes) keeps running meanwhile.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = found()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not received within {timeout}s; spans: "
                    f"{sorted({s.name for s in self.spans()})}; metrics: "
                    f"{sorted(self.metric_names())}"
                )
            await asyncio.sleep(0.1)


def _points(metric: Any, resource: dict[str, Any]) -> Iterator[Point]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        for dp in getattr(metric, kind).data_points:
            value = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
            yield Point(
                metric.name, kind, metric.unit, attributes(dp.attributes), resource, float(value), 0
            )
    elif kind is not None:  # the histograms and summaries: a sum and a count, bounds if any
        for dp in getattr(metric, kind).data_points:
            yield Point(
                metric.name,
                kind,
                metric.unit,
                attributes(dp.attributes),
                resource,
                float(getattr(dp, "sum", 0.0)),
                int(getattr(dp, "count", 0)),
                tuple(getattr(dp, "explicit_bounds", ())),
            )


def main() -> None:
    """Print each span and metric as it arrives, for a look at a live worker."""
    receiver = OtlpReceiver().start()
    print(f"OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint}", flush=True)
    seen_spans = seen_points = 0
    try:
        while True:
            spans, points = receiver.spans(), receiver.points()
            for span in spans[seen_spans:]:
                print(f"span {span.trace_id} {span.name} {span.attributes}", flush=True)
            for point in points[seen_points:]:
                print(f"metric {point.metric} {point.attributes} {point.value}", flush=True)
            seen_spans, seen_points = len(spans), len(points)
            time.sleep(1)
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
