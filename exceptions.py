"""Exception hierarchy. Each carries one readable line meant for an operator."""


class TemporalWorkerError(Exception):
    """Base class of the worker's own errors."""


class ConfigError(TemporalWorkerError):
    """A setting in the environment is missing or invalid."""


class CredentialError(TemporalWorkerError):
    """TLS material or Vault credentials could not be resolved."""


class TemporalUnreachableError(TemporalWorkerError):
    """Client.connect failed: nothing answered, or the TLS handshake did not complete."""


class ActivityRuntimeError(TemporalWorkerError):
    """An activity met a condition it cannot recover from."""


class TaskFileError(TemporalWorkerError):
    """A task, request or summary file could not be written or read."""


class TriageError(TemporalWorkerError):
    """The security agent's triage-output.yml is malformed."""


# ApplicationError type strings that workflows treat as final (never retried).
PHASE_FAILED = "PhaseFailedError"
TRIAGE_MALFORMED = "TriageMalformedError"
INVALID_INPUT = "InvalidInputError"
TASK_FILE_ERROR = "TaskFileError"
OVER_BUDGET = "OverBudgetError"  # the run's agents spent its budget, and nobody raised it
STAGE_TIMED_OUT = "StageTimedOutError"  # a stage or phase ran out of time, or of heartbeats
