class UsageError(Exception):
    """A problem the user can fix (bad flag, missing data, wrong checkpoint): reported as one line, no traceback."""
