"""The one error type the collection raises for what a user can fix; the command line reports it as one line."""


class RunError(Exception):
    """A problem the user can fix (a missing file, a bad setting, a diverging run): one line, exit code 2."""
