"""What the CPU is and what it computes fast: its model, its SIMD features, and whether bfloat16 pays off.

Numbers measured on one CPU do not carry over to another (bf16 matmul is ~4x float32 with AMX and ~1.1x
without; TFLite int8 is far faster than fp32 with VNNI/AMX and no faster on AVX2 alone), so every benchmark
and model card names the features it ran with. Pure Python: reads /proc/cpuinfo, imports nothing heavy.
"""
import functools
import os
import platform

# /proc/cpuinfo flag -> the name users know it by, in the order they are listed.
FEATURES = (
    ("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"),
    ("avx_vnni", "AVX-VNNI"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"), ("amx_int8", "AMX-INT8"),
    ("asimd", "NEON"), ("sve", "SVE"), ("bf16", "BF16"), ("i8mm", "I8MM"),
)
# Flags under which mixed_bfloat16 runs faster than float32 on the CPU (x86: AVX512-BF16 or AMX; Arm: BF16).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def parse_cpuinfo(text):
    """(model name, frozenset of feature flags) from the text of /proc/cpuinfo (x86 'flags', Arm 'Features')."""
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not name:
            name = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return name, frozenset(flags)


@functools.lru_cache(maxsize=1)
def _cpuinfo():
    """This machine's parse_cpuinfo; ('', empty set) where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return "", frozenset()


def cpu_features(flags=None):
    """The SIMD features that matter for inference speed, by their common names (e.g. ['AVX2', 'FMA']), of
    `flags` (default: this CPU's)."""
    flags = _cpuinfo()[1] if flags is None else flags
    return [label for flag, label in FEATURES if flag in flags]


def cpu_has_bf16(flags=None):
    """True when the CPU (or `flags`) has native bfloat16 arithmetic (AVX512-BF16, AMX or Arm BF16), where
    mixed_bfloat16 pays off."""
    flags = _cpuinfo()[1] if flags is None else flags
    return any(flag in flags for flag in BF16_FLAGS)


def describe_machine():
    """One line naming the machine for a benchmark or a card: architecture, cores, CPU model and features."""
    name, _ = _cpuinfo()
    features = cpu_features()
    text = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    if name:
        text += f", {name}"
    return text + (f" ({', '.join(features)})" if features else "")
