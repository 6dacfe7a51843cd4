"""program_exit: every exit code once, and how a program's end maps to the code PM2 and
operators read.

The worker's and the runner's real exits (a bad setting, an unreachable server) are tested
through their processes in test_config.py, test_vault_tls.py and
test_agent_runner_stops.py; these pin the mapping itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

import program_exit
from exceptions import ConfigError, CredentialError, TemporalUnreachableError
from program_exit import CLI_EXIT_CODES, EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_UNREACHABLE, exit_code
from tests.helpers.checks import modules_imported_by

pytestmark = pytest.mark.unit


def _raising(err: BaseException) -> Callable[[], None]:
    def run() -> None:
        raise err

    return run


@pytest.mark.parametrize(
    ("err", "name_error", "code", "line"),
    [
        (ConfigError("TASK_QUEUE is empty"), False, EXIT_CONFIG, "prog: TASK_QUEUE is empty"),
        (
            CredentialError("VAULT_ROLE_ID is not set"),
            True,
            EXIT_CONFIG,
            "prog: CredentialError: VAULT_ROLE_ID is not set",
        ),
        (
            TemporalUnreachableError("cannot reach Temporal at x:1"),
            True,
            EXIT_UNREACHABLE,
            "prog: cannot reach Temporal at x:1",
        ),
        (KeyboardInterrupt(), False, EXIT_INTERRUPTED, ""),
    ],
)
def test_each_ending_has_its_code_and_one_line(
    err: BaseException, name_error: bool, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got = exit_code("prog", _raising(err), (ConfigError, CredentialError), name_error=name_error)
    out, stderr = capsys.readouterr()
    assert got == code
    assert out == ""
    assert stderr == (f"{line}\n" if line else "")


def test_a_clean_return_is_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code("prog", lambda: None, (ConfigError,)) == 0
    assert capsys.readouterr() == ("", "")


def test_an_error_not_named_as_a_config_error_is_not_swallowed() -> None:
    """The runner names TaskFileError as a config error and the worker does not; anything else
    reaches the caller, whose `__main__` prints one line of its own."""
    with pytest.raises(CredentialError):
        exit_code("prog", _raising(CredentialError("x")), (ConfigError,))


def test_each_code_means_one_thing() -> None:
    codes = {name: code for name, code in vars(program_exit).items() if name.startswith("EXIT_")}
    assert sorted(codes.values()) == sorted(set(codes.values())), codes
    assert set(codes.values()) >= CLI_EXIT_CODES


def test_importing_it_loads_only_the_standard_library() -> None:
    """complete_activity.py imports it at start, before its arguments are checked."""
    added = {m.split(".")[0] for m in modules_imported_by("program_exit")}
    assert "program_exit" in added  # the listing is real
    assert added <= {"program_exit", "exceptions"} | set(sys.stdlib_module_names)
