"""What `init_observability()` set up, shared by the modules that read it.

One process-wide value: None while OpenTelemetry is off (the default), so every hook can
return at once. Only `observability.telemetry` sets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.runtime import Runtime


@dataclass
class Otel:
    endpoint: str
    service_name: str
    tracer_provider: Any  # opentelemetry.sdk.trace.TracerProvider
    tracer: Any  # opentelemetry.trace.Tracer
    client_options: dict[str, Any] | None = None  # built on first use: the worker needs them,
    runtime: Runtime | None = None  # the CLI does not


_current: Otel | None = None


def current() -> Otel | None:
    """The running OpenTelemetry set-up, or None while it is off."""
    return _current


def replace(state: Otel | None) -> Otel | None:
    """Install `state` (None: off) and return the one it replaces."""
    global _current
    previous, _current = _current, state
    return previous
