"""User-facing errors: one line that names the problem and the fix. The CLI prints them without a traceback."""


class SyncSDEError(Exception):
    """A configuration or input mistake the user can fix."""


class ModelNotFoundError(SyncSDEError):
    pass


class InputError(SyncSDEError, ValueError):
    pass
