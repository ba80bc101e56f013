"""Errors a user can cause. The CLI prints them as one line, without a traceback."""

import sys


class BpfreeError(Exception):
    """A problem with the user's input or environment, stated so it can be fixed."""


class DatasetMissing(BpfreeError):
    """A dataset is not on disk and downloading was not asked for."""


# How running out of memory reads, by where it happened: torch's caching allocator
# ("CUDA out of memory"), a CUDA call ("CUDA error: out of memory"), cuBLAS or cuDNN failing
# to get a workspace, the CPU allocator ("DefaultCPUAllocator: can't allocate memory").
OUT_OF_MEMORY_MESSAGES = (
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "can't allocate memory",
)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says the device (or the host) ran out of memory, in any of the forms
    torch raises it. Imports nothing: torch's own class is checked only where torch is loaded."""
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_class = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_class is not None and isinstance(err, oom_class):
        return True
    if not isinstance(err, RuntimeError):
        return False
    text = str(err)
    return any(message.lower() in text.lower() for message in OUT_OF_MEMORY_MESSAGES)
