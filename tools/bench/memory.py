"""Memory readings from /proc (Linux): resident set, its high-water mark and its reset."""
from __future__ import annotations

import ctypes


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM); -1 where absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def text_backward_gib(text_prompts: int, text_length: int, width: int, layers: int) -> float:
    """Float32 activations that torch keeps for the text tower's backward: ~22 floats per
    (prompt, token, channel, layer), as measured with open_clip's ViT-B/32 text tower (19.5 GiB
    for LIQE's 495 prompts x 77 tokens)."""
    return 22 * text_prompts * text_length * width * layers * 4 / 2**30


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not possible.

    Heap that earlier work freed (XLA's compiler, a warm-up step) is first handed back to the
    system (glibc's `malloc_trim`), so that the peak is what the timed steps hold, in both
    frameworks alike.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_memory_marks(marks: dict):
    """A `before_timing` callback that records the RSS and resets the peak (`reset_peak_rss`)."""
    def before():
        marks["rss_before"] = status_kib("VmRSS")
        marks["reset"] = reset_peak_rss()
    return before
