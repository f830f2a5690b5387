"""The machine a run is on: its CPU's name, the memory available to this process, and an
allocation that failed said in one paragraph. No TensorFlow here: a counting model's run uses them
too (`memory` adds TensorFlow's errors and a network's estimate, `peak` the GEMMs' FLOP/s)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmbench.errors import ConfigError

GB = 1e9


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`, as `lscpu` shows it), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """What this process's cgroup (v2) still allows: memory.max less memory.current; None unlimited."""
    try:
        relative = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split(":", 2)[2]
        folder = Path("/sys/fs/cgroup") / relative.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text()))
    except (OSError, ValueError, IndexError):
        return None


def available_host() -> int | None:
    found = [x for x in (_meminfo_available(), _cgroup_available()) if x is not None]
    return min(found) if found else None


def size_text(size: int) -> str:
    """Bytes as a person reads them: '18 MB' below a gigabyte, '2.79 GB' from there."""
    return f"{size / 1e6:,.0f} MB" if size < GB else f"{size / GB:,.2f} GB"


def exhausted(ex: BaseException) -> str:
    """The paragraph for an allocation that failed although the estimate said the model fits."""
    detail = str(ex).strip().splitlines()[0][:300] if str(ex).strip() else type(ex).__name__
    free = available_host()
    have = f" ({size_text(free)} available now)" if free is not None else ""
    return (
        f"out of memory{have}: {type(ex).__name__}: {detail}. The model, a training step's activations "
        "or the scoring windows did not fit: make the model smaller, lower trainer.batch_size, bptt or "
        "trainer.eval_batch_size, try trainer.precision=mixed_bfloat16, or use a machine with more memory"
    )


@contextmanager
def allocation_failures(errors: tuple[type[BaseException], ...] = (MemoryError,)) -> Iterator[None]:
    """Inside this block, a failed allocation (`errors`: what raises one) is raised as ConfigError,
    in one paragraph."""
    try:
        yield
    except errors as ex:
        raise ConfigError(exhausted(ex)) from None
