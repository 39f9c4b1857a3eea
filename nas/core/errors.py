"""The one exception type for mistakes a user can fix.

The CLI prints a `NasError` as a single line and exits with code 2 (no traceback unless
`--debug`). It subclasses `ValueError` so library callers can catch it as such.
"""


class NasError(ValueError):
    """Bad input: the message says what was wrong and what would be right."""
