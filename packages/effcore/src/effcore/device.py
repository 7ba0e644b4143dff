"""Hardware: the one place that probes devices, and the specs cost models are built on."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from effcore.errors import ConfigError
from effcore.io import write_json

__all__ = [
    "KNOWN_DEVICES",
    "DeviceSpec",
    "cpu_model",
    "cuda_available",
    "device_spec",
    "infer_device",
    "known_spec",
    "measure_cpu_spec",
]

_GB = 1e9
_TB = 1e12


def cuda_available() -> bool:
    """True when a usable CUDA device is present (the only hardware probe in effml)."""
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def infer_device(requested: str | torch.device | None = None) -> torch.device:
    """Resolve ``requested`` ("auto"/None, "cpu", "cuda", "cuda:1") into a usable ``torch.device``.

    "auto" picks the first CUDA device when present, the CPU otherwise. Asking for CUDA on a
    machine without it is a :class:`ConfigError`, not a silent fallback.
    """
    if requested is None or str(requested) == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if cuda_available() else torch.device("cpu")
    try:
        dev = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"unknown device {requested!r}", hint="use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if dev.type == "cuda":
        if not cuda_available():
            raise ConfigError(
                "device 'cuda' requested but no CUDA device is available", hint="use --device cpu"
            )
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device cuda:{index} does not exist",
                hint=f"this machine has {torch.cuda.device_count()} CUDA device(s)",
            )
        return torch.device("cuda", index)
    if dev.type != "cpu":
        raise ConfigError(f"device type {dev.type!r} is not supported", hint="use 'auto', 'cpu' or 'cuda'")
    return dev


@dataclass(kw_only=True, slots=True, frozen=True)
class DeviceSpec:
    """Capabilities of one accelerator (or the host CPU) for analytic cost models.

    Bandwidths are bytes/s **per direction**; FLOP/s are dense (no structured sparsity), keyed by
    dtype name ("float32", "tfloat32", "bfloat16", "float16", "float8", "float64").
    """

    name: str
    kind: str  # "cuda" or "cpu"
    memory_bytes: int
    peak_flops: dict[str, float]
    memory_bandwidth: float
    host_link_bandwidth: float
    interconnect_bandwidth: float
    source: str
    measured: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def flops(self, dtype: torch.dtype | str) -> float:
        """Peak FLOP/s for ``dtype``; fp32 matmuls may use the TF32 figure only when asked by name."""
        key = str(dtype).removeprefix("torch.")
        if key not in self.peak_flops:
            raise ConfigError(
                f"{self.name} has no peak FLOP/s for dtype {key!r}",
                hint=f"known: {', '.join(sorted(self.peak_flops))}",
            )
        return self.peak_flops[key]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DeviceSpec:
        return cls(**data)


# Datasheet figures (dense, SXM form factor). NVLink figures are the datasheets' bidirectional
# totals halved to per-direction; PCIe is x16 per direction.
KNOWN_DEVICES: dict[str, DeviceSpec] = {
    "V100": DeviceSpec(
        name="V100",
        kind="cuda",
        memory_bytes=32 * 2**30,
        peak_flops={"float64": 7.8 * _TB, "float32": 15.7 * _TB, "float16": 125 * _TB},
        memory_bandwidth=900 * _GB,
        host_link_bandwidth=16 * _GB,
        interconnect_bandwidth=150 * _GB,
        source="NVIDIA Tesla V100 datasheet (SXM2 32GB): 900 GB/s HBM2, NVLink 2 300 GB/s, PCIe Gen3",
    ),
    "A100": DeviceSpec(
        name="A100",
        kind="cuda",
        memory_bytes=80 * 2**30,
        peak_flops={
            "float64": 19.5 * _TB,
            "float32": 19.5 * _TB,
            "tfloat32": 156 * _TB,
            "bfloat16": 312 * _TB,
            "float16": 312 * _TB,
        },
        memory_bandwidth=2039 * _GB,
        host_link_bandwidth=32 * _GB,
        interconnect_bandwidth=300 * _GB,
        source="NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): 2,039 GB/s HBM2e, NVLink 3 600 GB/s, PCIe Gen4",
    ),
    "H100": DeviceSpec(
        name="H100",
        kind="cuda",
        memory_bytes=80 * 2**30,
        peak_flops={
            "float64": 67 * _TB,
            "float32": 67 * _TB,
            "tfloat32": 494.5 * _TB,
            "bfloat16": 989.4 * _TB,
            "float16": 989.4 * _TB,
            "float8": 1978.9 * _TB,
        },
        memory_bandwidth=3350 * _GB,
        host_link_bandwidth=64 * _GB,
        interconnect_bandwidth=450 * _GB,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM5 80GB): 3.35 TB/s HBM3, NVLink 4 900 GB/s, PCIe Gen5",
    ),
}


# Same compute as the H100 SXM; more and faster memory (HBM3e).
KNOWN_DEVICES["H200"] = dataclasses.replace(
    KNOWN_DEVICES["H100"],
    name="H200",
    memory_bytes=141 * 10**9,
    memory_bandwidth=4800 * _GB,
    source="NVIDIA H200 Tensor Core GPU datasheet (SXM 141GB): 4.8 TB/s HBM3e, NVLink 4 900 GB/s, PCIe Gen5",
)


def known_spec(name: str) -> DeviceSpec:
    """The datasheet spec of a known accelerator ("A100", "H100", "H200", "V100"), case-insensitive."""
    key = name.upper()
    if key not in KNOWN_DEVICES:
        raise ConfigError(f"unknown accelerator {name!r}", hint=f"known: {', '.join(KNOWN_DEVICES)}")
    return KNOWN_DEVICES[key]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo; else what ``platform`` reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _median_seconds(fn, reps: int) -> float:
    fn()  # warm-up: first call pays for allocation and kernel selection
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _measure_cpu(n: int = 768, copy_mib: int = 128, reps: int = 5) -> DeviceSpec:
    gen = torch.Generator().manual_seed(0)
    flops: dict[str, float] = {}
    # CPUs without native bf16 matmul run it ~50x slower than fp32: a smaller problem keeps the
    # measurement short while still reporting that (real) gap.
    for dtype, size in ((torch.float32, n), (torch.bfloat16, n // 4)):
        a = torch.randn(size, size, generator=gen).to(dtype)
        b = torch.randn(size, size, generator=gen).to(dtype)
        flops[str(dtype).removeprefix("torch.")] = 2 * size**3 / _median_seconds(lambda a=a, b=b: a @ b, reps)
    src = torch.empty(copy_mib * 2**20 // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    copy_s = _median_seconds(lambda: dst.copy_(src), reps)
    # A copy reads and writes every byte: 2x bytes moved.
    mem_bw = 2 * src.numel() * 4 / copy_s
    return DeviceSpec(
        name=f"cpu:{cpu_model()}",
        kind="cpu",
        memory_bytes=_total_ram(),
        peak_flops=flops,
        memory_bandwidth=mem_bw,
        # Host<->"device" is a copy within the same DRAM; ranks on one host talk through shared
        # memory, so both links are bounded by the measured copy bandwidth.
        host_link_bandwidth=mem_bw / 2,
        interconnect_bandwidth=mem_bw / 2,
        source=f"measured: {n}^3 matmul and {copy_mib} MiB copy, median of {reps}, {torch.get_num_threads()} threads",
        measured=True,
        extra={"threads": str(torch.get_num_threads()), "torch": torch.__version__},
    )


def measure_cpu_spec(*, cache_dir: Path | None = None, refresh: bool = False) -> DeviceSpec:
    """Measure the local CPU (about a second), cached per CPU model, thread count and torch version."""
    from effcore.assets.paths import cache_root

    key = f"{cpu_model()}|{torch.get_num_threads()}|{torch.__version__}"
    safe = "".join(c if c.isalnum() else "_" for c in key)[:120]
    path = (cache_dir or cache_root() / "device") / f"cpu-{safe}.json"
    if path.exists() and not refresh:
        try:
            return DeviceSpec.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError):
            pass  # corrupt cache: measure again and overwrite
    spec = _measure_cpu()
    write_json(path, spec.to_dict())
    return spec


def device_spec(device: str | torch.device | None = None) -> DeviceSpec:
    """The spec of ``device``: a datasheet entry for a known GPU (memory from the driver), measured for CPU."""
    dev = infer_device(device)
    if dev.type == "cpu":
        return measure_cpu_spec()
    props = torch.cuda.get_device_properties(dev)
    for key, spec in KNOWN_DEVICES.items():
        if key in props.name.upper():
            return dataclasses.replace(
                spec, memory_bytes=props.total_memory, extra={"driver_name": props.name}
            )
    raise ConfigError(
        f"no datasheet entry for {props.name!r}",
        hint=f"pass a known spec explicitly (known: {', '.join(KNOWN_DEVICES)})",
    )
