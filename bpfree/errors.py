"""Errors a user can cause. The CLI prints them as one line, without a traceback."""


class BpfreeError(Exception):
    """A problem with the user's input or environment, stated so it can be fixed."""


class DatasetMissing(BpfreeError):
    """A dataset is not on disk and downloading was not asked for."""
