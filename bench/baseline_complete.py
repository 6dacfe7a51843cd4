"""The least a completion CLI can be: import temporalio, connect, complete by token.

`python bench/baseline_complete.py <task_token_b64> <message>`; P2's baseline.
"""

import asyncio
import base64
import os
import sys

from temporalio.client import Client


async def main() -> None:
    client = await Client.connect(os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"))
    handle = client.get_async_activity_handle(task_token=base64.b64decode(sys.argv[1]))
    await handle.complete({"status": "success", "output": sys.argv[2]})


asyncio.run(main())
os._exit(0)  # skip interpreter teardown, which can segfault after the Temporal runtime ran,
# as complete_activity.py does; measured here: 1 of 40 normal exits died with SIGSEGV
