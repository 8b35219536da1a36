"""Keep the main thread's alternate signal stack valid after native libraries replaced it.

OpenVINO's CPU plugin installs an alternate signal stack (`sigaltstack`) on the thread that
creates it and frees that memory when the plugin goes away; Python runs its signal handlers
with `SA_ONSTACK`, so a SIGTERM or Ctrl-C that arrives afterwards lands on freed memory and the
process dies with a segmentation fault instead of ending its run as KILLED. `reclaim` points
the thread's alternate stack back at a buffer that lives as long as the process.
"""

from __future__ import annotations

import ctypes
import threading

_SIZE = 1 << 16


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_buffer = ctypes.create_string_buffer(_SIZE)  # never freed: the process's own alternate stack


def current() -> int | None:
    """Address of the calling thread's alternate signal stack (None when it has none or it cannot be read)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        stack = _StackT()
        if libc.sigaltstack(None, ctypes.byref(stack)) != 0 or stack.ss_flags & 2:  # SS_DISABLE
            return None
        return stack.ss_sp
    except (OSError, AttributeError):
        return None


def own() -> int:
    """Address of the process's own alternate stack."""
    return ctypes.addressof(_buffer)


def reclaim() -> bool:
    """Make the calling (main) thread's alternate signal stack the process's own; False where that is not possible."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        stack = _StackT(ctypes.cast(_buffer, ctypes.c_void_p), 0, _SIZE)
        return libc.sigaltstack(ctypes.byref(stack), None) == 0
    except (OSError, AttributeError):
        return False
