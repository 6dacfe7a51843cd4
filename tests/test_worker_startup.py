"""The worker's start-up check of the BuildStage search attribute, against real servers."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import worker
from harness.env import TEMPORAL_BIN
from tests.helpers.time_skipping import time_skipping_server


async def test_registers_build_stage_where_missing() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_BIN, data_converter=pydantic_data_converter
    )
    try:
        request = ListSearchAttributesRequest(namespace="default")
        before = await env.client.operator_service.list_search_attributes(request)
        assert "BuildStage" not in before.custom_attributes
        assert await worker.check_search_attribute(env.client, "default") is True
        after = await env.client.operator_service.list_search_attributes(request)
        assert "BuildStage" in after.custom_attributes
    finally:
        await env.shutdown()


async def test_server_without_search_attributes_is_detected() -> None:
    """The time-skipping test server has no operator service: the pipeline runs without it."""
    async with time_skipping_server() as env:
        assert await worker.check_search_attribute(env.client, "default") is False
