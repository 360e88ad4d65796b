"""The one error type the collection raises for what a user can fix (the command line reports it as one line), and
the value that stands for a run that failed inside a batch."""

from dataclasses import dataclass


class RunError(Exception):
    """A problem the user can fix (a missing file, a bad setting, a diverging run): one line, exit code 2."""


@dataclass(frozen=True)
class Failed:
    """A run that failed inside a batch (its RunError's message), handed back in place of its result while the
    batch's other runs went on (dipkit.batch, dipkit.engines)."""

    message: str
    traceback: str = ""  # where the failure was an error in the code: its traceback (kept in the run folder)
