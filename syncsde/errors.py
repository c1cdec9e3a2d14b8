"""User-facing errors: one line that names the problem and the fix. The CLI prints them without a traceback."""


class SyncSDEError(Exception):
    """A configuration or input mistake the user can fix.

    The latest one raised is remembered (``SyncSDEError.last``): jsonargparse wraps exceptions raised while it
    instantiates classes from a config into its own message, and the CLI uses this to print ours instead.
    """

    last: "SyncSDEError | None" = None

    def __init__(self, *args):
        super().__init__(*args)
        SyncSDEError.last = self


class ModelNotFoundError(SyncSDEError):
    pass


class InputError(SyncSDEError, ValueError):
    pass


class Stopped(BaseException):
    """A run stopped by a signal (SIGTERM, SIGINT): raised in the main thread by the run's signal handler, so that
    the sample being written is abandoned between files (each is written atomically) and the run ends with one line
    and the exit code 128 + the signal's number. A BaseException, like KeyboardInterrupt: no ``except Exception``
    swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
