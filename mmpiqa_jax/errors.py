"""The errors a user can fix; `mmpiqa` prints a `UserError` as one line and exits 1."""


class UserError(ValueError):
    """Input the user can fix: a config value or key, a file's contents, a command's argument."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that the user named, or that a run needs, does not exist."""
