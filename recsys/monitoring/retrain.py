"""Run the configured retrain command when a monitor alerts, so retraining on drift is wired.

The command is an argv list (``MonitoringConfig.retrain_command``), run without a shell, in the
monitor's environment, with a timeout. Its outcome is returned, never raised: the alert that
triggered it has to be reported whatever the command did.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RetrainRun:
    """``exit_status``: the command's exit status, None when it could not start or timed out
    (``error`` then says why)."""

    command: list[str]
    exit_status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def to_dict(self) -> dict:
        return asdict(self)


def run_retrain(command: Sequence[str], timeout_seconds: float) -> RetrainRun:
    """Run ``command`` to completion (its output goes to the monitor's own stdout/stderr)."""
    argv = list(command)
    try:
        done = subprocess.run(argv, timeout=timeout_seconds, check=False)
    except FileNotFoundError:
        return RetrainRun(argv, None, f"command not found: {argv[0]!r}")
    except PermissionError:
        return RetrainRun(argv, None, f"not executable: {argv[0]!r}")
    except subprocess.TimeoutExpired:
        return RetrainRun(argv, None, f"timed out after {timeout_seconds:g} s")
    return RetrainRun(argv, done.returncode)
