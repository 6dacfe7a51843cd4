"""Stand-ins for the agent CLIs the runner reads usage from, printing the documented output
shapes, never touching a network: `claude -p --output-format json|stream-json` (one result
object at the end) and `codex exec --json` (JSONL events, `turn.completed` with its usage).

What a fake prints comes from its environment (the commands file's `env`), so one script serves
every case; each run also records what the runner gave it (its arguments, its TASK_* variables
and the task file TASK_FILE names) as `<FAKE_RECORD>/<TASK_ID>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.runner import python_agent


def claude_result(**changes: Any) -> dict[str, Any]:
    """Claude Code's final result object, a success unless `changes` say otherwise."""
    result: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 8421,
        "duration_api_ms": 7930,
        "num_turns": 4,
        "result": "The build is complete and verified.",
        "session_id": "0b4c2f5e-6a1d-4e8f-9c3b-2d7a1e5f8c90",
        "total_cost_usd": 0.0421,
        "usage": {
            "input_tokens": 1200,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 5000,
            "output_tokens": 800,
        },
    }
    result.update(changes)
    return result


def claude_stream(result: dict[str, Any]) -> list[str]:
    """`--output-format stream-json`: an init line, the turns' messages, the result last."""
    session = result.get("session_id", "")
    events = [
        {"type": "system", "subtype": "init", "session_id": session, "tools": ["Bash"]},
        {
            "type": "assistant",
            "session_id": session,
            "message": {"role": "assistant", "content": [{"type": "text", "text": "Working."}]},
        },
        {
            "type": "user",
            "session_id": session,
            "message": {"role": "user", "content": [{"type": "tool_result", "content": "ok"}]},
        },
        result,
    ]
    return [json.dumps(event) for event in events]


def codex_events(turns: list[tuple[int, int, int]], message: str) -> list[str]:
    """`codex exec --json`: one turn per (input, cached input, output) tokens, the agent's
    message in the last."""
    events: list[dict[str, Any]] = [{"type": "thread.started", "thread_id": "thread-1"}]
    for n, (fresh, cached, output) in enumerate(turns):
        events.append({"type": "turn.started"})
        events.append(
            {
                "type": "item.completed",
                "item": {"id": f"item_{n}", "type": "reasoning", "text": "Reading the plan."},
            }
        )
        if n == len(turns) - 1:
            events.append(
                {
                    "type": "item.completed",
                    "item": {"id": f"item_{n}m", "type": "agent_message", "text": message},
                }
            )
        events.append(
            {
                "type": "turn.completed",
                "usage": {
                    "input_tokens": fresh,
                    "cached_input_tokens": cached,
                    "output_tokens": output,
                },
            }
        )
    return [json.dumps(event) for event in events]


_RECORD = """
record = pathlib.Path(os.environ["FAKE_RECORD"])
record.mkdir(exist_ok=True)
task_file = pathlib.Path(os.environ["TASK_FILE"])
(record / (os.environ["TASK_ID"] + ".json")).write_text(json.dumps({
    "argv": sys.argv[1:],
    "env": {k: v for k, v in os.environ.items() if k.startswith("TASK_")},
    "task_file": task_file.read_text(),
}))
if os.environ.get("FAKE_USAGE_FILE"):
    pathlib.Path(os.environ["TASK_USAGE_FILE"]).write_text(os.environ["FAKE_USAGE_FILE"])
print("starting", file=sys.stderr, flush=True)
"""

_CLAUDE = """
args = sys.argv[1:]
assert "-p" in args, args
mode = args[args.index("--output-format") + 1] if "--output-format" in args else "text"
result = json.loads(os.environ["FAKE_RESULT"])
if mode == "json":
    print(json.dumps(result))
elif mode == "stream-json":
    for line in json.loads(os.environ["FAKE_STREAM"]):
        print(line, flush=True)
else:
    print(result.get("result", ""))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""

_CODEX = """
args = sys.argv[1:]
assert args[:2] == ["exec", "--json"], args
for line in json.loads(os.environ["FAKE_EVENTS"]):
    print(line, flush=True)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def fake_claude(path: Path) -> Path:
    """A `claude` that prints FAKE_RESULT (JSON) as `--output-format` asks: the object for
    `json`, FAKE_STREAM's lines for `stream-json`, its `result` text otherwise; exits
    FAKE_EXIT (0)."""
    return python_agent(path, "import json" + _RECORD + _CLAUDE)


def fake_codex(path: Path) -> Path:
    """A `codex` that prints FAKE_EVENTS's lines for `exec --json`; exits FAKE_EXIT (0)."""
    return python_agent(path, "import json" + _RECORD + _CODEX)


def recorded(record: Path, task_id: str) -> dict[str, Any]:
    """What the fake of task `task_id` was given: `argv`, `env` (TASK_*) and `task_file`."""
    data: dict[str, Any] = json.loads((record / f"{task_id}.json").read_text())
    return data
