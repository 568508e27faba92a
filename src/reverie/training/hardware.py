"""What the machine offers, the precision ``run.precision=auto`` picks from it, and the allocator setting.

:func:`pick_precision` is a pure function of the facts (CPU flags, the device,
whether the GPU does bf16), so its logic is tested for every kind of machine;
:func:`cpu_flags` and :func:`resolve_precision` read the facts of this one.

bf16 is picked where matrix products in bf16 run natively: CPUs with AMX
(``amx_bf16``) or AVX512-BF16 (``avx512_bf16``), and CUDA GPUs that support
bf16 (compute capability 8.0 and up). Elsewhere bf16 is emulated and slower
than fp32, so fp32 is picked.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path
from typing import Mapping

#: CPU flags (as /proc/cpuinfo spells them) that mean native bf16 matrix products.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def pick_precision(requested: str, device: str, flags: frozenset[str] | set[str],
                   cuda_bf16: bool = False) -> tuple[str, str]:
    """``(precision, reason)``: ``requested`` itself unless it is ``"auto"``, then bf16 or fp32 by the hardware."""
    if requested != "auto":
        return requested, "asked for"
    if device.startswith("cuda"):
        return ("bf16", "auto: this GPU supports bf16") if cuda_bf16 else ("fp32", "auto: this GPU lacks bf16")
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native:
        return "bf16", f"auto: this CPU multiplies bf16 natively ({', '.join(native)})"
    return "fp32", "auto: this CPU has no native bf16 matrix products (no amx_bf16 or avx512_bf16)"


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux: /proc/cpuinfo; elsewhere an empty set, so auto picks fp32)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def resolve_precision(requested: str, device: str) -> tuple[str, str]:
    """:func:`pick_precision` on this machine."""
    if requested != "auto":
        return requested, "asked for"
    cuda_bf16 = False
    if device.startswith("cuda"):
        import torch
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return pick_precision(requested, device, cpu_flags(), cuda_bf16)


def cpu_model() -> str:
    """The CPU's model name, for benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: glibc's mallopt parameter numbers (malloc.h) and the environment variables that set them at start-up.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD")
#: Blocks up to this size come from the heap and stay there when freed (mallopt's maximum, 2 GiB - 1).
KEEP_BYTES = 2**31 - 1


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> str:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves every block over a (sliding) threshold of at most 32 MiB with its own ``mmap``
    and returns the top of the heap when 128 KiB of it are free, so an update that allocates and frees the
    same large activations each time pays for fresh zeroed pages each time: 185,000 minor page faults per
    Dreamer size-S update here, 10-19 % of its time (BENCHMARKS.md, "Dreamer update against the official
    JAX DreamerV3"). Raising both thresholds to 2 GiB keeps the memory in the process, as PyTorch's GPU
    caching allocator does; the resident size then stays at its peak. Does nothing where the user chose
    an allocator (any of :data:`MALLOC_ENV` set) or off glibc. Returns what it did, in words.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    chosen = [k for k in MALLOC_ENV if env.get(k)]
    if chosen:
        return f"malloc left as the environment sets it ({', '.join(chosen)})"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "malloc left alone (not glibc)"
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    except (OSError, AttributeError):
        ok = False
    return "malloc keeps freed blocks up to 2 GiB for reuse" if ok else "malloc left alone (mallopt refused)"


__all__ = ["KEEP_BYTES", "MALLOC_ENV", "NATIVE_BF16_FLAGS", "cpu_flags", "cpu_model", "keep_freed_memory",
           "pick_precision", "resolve_precision"]
