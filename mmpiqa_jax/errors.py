"""The errors a user can fix: a bad value, config key, file or folder, and a diverged run.

`mmpiqa` prints a `UserError` as one line (`error: ...`) and exits 1; every other exception is
a bug and keeps its traceback. A message names the file, row, key or value at fault.
"""


class UserError(ValueError):
    """Input the user can fix: a config value or key, a file's contents, a command's argument."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that the user named, or that a run needs, does not exist."""
