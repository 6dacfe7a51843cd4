"""How the programs end: one line and a documented exit code, without interpreter teardown.

Every exit code of the three programs is defined here, once. The worker and the agent runner
are kept alive by PM2, which reads their exit code: 2 is a setting to fix (restarting will not
help), 3 is Temporal unreachable at start (a restart later may), 130 is Ctrl-C. The line on
stderr names the program and the cause; a traceback would only bury it. complete_activity.py's
codes (`CLI_EXIT_CODES`) are what its usage and docs/AGENTS.md list for agents; it shares 3 and
130 with the others.

Importing this module stays cheap (standard library only): the CLI imports it at start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from exceptions import TemporalUnreachableError

EXIT_OK = 0
EXIT_USAGE = 1  # the CLI's arguments or token format
EXIT_CONFIG = 2  # the worker's or the runner's settings
EXIT_UNREACHABLE = 3
EXIT_TOKEN = 4  # the token is unknown, already used, or its attempt timed out
EXIT_CREDENTIALS = 5  # the CLI's TLS or Vault credentials
EXIT_STOP = 6  # a heartbeat's answer: stop working on the task
EXIT_INTERRUPTED = 130
CLI_EXIT_CODES = frozenset(
    {EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TOKEN, EXIT_CREDENTIALS, EXIT_STOP}
)


def exit_code(
    program: str,
    run: Callable[[], None],
    config_errors: tuple[type[Exception], ...],
    *,
    name_error: bool = False,
) -> int:
    """Run `run` and map how it ends to the documented exit code, saying why on stderr.

    `name_error` puts the error's class name before its message (the worker's form).
    """
    try:
        run()
    except config_errors as err:
        kind = f"{type(err).__name__}: " if name_error else ""
        print(f"{program}: {kind}{err}", file=sys.stderr)
        return EXIT_CONFIG
    except TemporalUnreachableError as err:
        print(f"{program}: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


def leave(code: int) -> NoReturn:
    """Leave without interpreter teardown, which can crash once the Temporal runtime has run.

    Measured: 15 of 100 runs against an unreachable server printed their one line and then
    died in finalization (SIGABRT "PyGILState_Release", or SIGSEGV), so PM2 saw a crash instead
    of exit 3. The worker, the agent runner and complete_activity.py all leave this way
    (docs/DESIGN.md).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
