"""Peak resident memory of this process, over a window that can be restarted.

On Linux the kernel keeps the RSS high-water mark (``VmHWM`` in ``/proc/self/status``)
and resets it to the current RSS when ``5`` is written to ``/proc/self/clear_refs``
(Linux 4.0+), so the peak over one benchmark is exact: reset before compiling, read
after the last run. Where that reset is unavailable the fallback is
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the high-water mark of the whole process
lifetime, which is an upper bound; the result says which method was used.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import psutil

METHOD_RESET = "vmhwm-reset"
METHOD_LIFETIME = "ru_maxrss-lifetime"

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> str:
    """Restart the peak-RSS window if the OS allows; return the method that
    :func:`peak_rss` will use (``"vmhwm-reset"`` or ``"ru_maxrss-lifetime"``)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return METHOD_LIFETIME
    return METHOD_RESET if _vmhwm() is not None else METHOD_LIFETIME


def peak_rss(method: str) -> int:
    """The peak RSS in bytes since :func:`reset_peak` (or over the process lifetime)."""
    if method == METHOD_RESET:
        hwm = _vmhwm()
        if hwm is not None:
            return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def current_rss() -> int:
    """The current RSS in bytes."""
    return psutil.Process().memory_info().rss


def _vmhwm() -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None
