"""The one exception type users see.

Every failure a user can cause (bad file, unpinned dim, unsupported op, wrong input) raises
EdgecError with a one-line message; the CLI prints it as `edgec: error: ...` and exits 2.
Anything else escaping is a bug in edgec, and is allowed to show a traceback.
"""


class EdgecError(Exception):
    """A user-facing error: `str(err)` is a complete one-line explanation."""
