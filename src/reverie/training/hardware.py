"""What the machine offers, and the precision ``run.precision=auto`` picks from it.

:func:`pick_precision` is a pure function of the facts (CPU flags, the device,
whether the GPU does bf16), so its logic is tested for every kind of machine;
:func:`cpu_flags` and :func:`resolve_precision` read the facts of this one.

bf16 is picked where matrix products in bf16 run natively: CPUs with AMX
(``amx_bf16``) or AVX512-BF16 (``avx512_bf16``), and CUDA GPUs that support
bf16 (compute capability 8.0 and up). Elsewhere bf16 is emulated and slower
than fp32, so fp32 is picked.
"""

from __future__ import annotations

import platform
from pathlib import Path

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


__all__ = ["NATIVE_BF16_FLAGS", "cpu_flags", "cpu_model", "pick_precision", "resolve_precision"]
