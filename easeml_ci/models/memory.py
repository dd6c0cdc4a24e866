"""A memory ceiling while a model runs on the test set: an allocation error, not a killed job.

A model whose memory use depends on the secret features (a shape computed from them, say) could
exhaust the machine's memory only on some test sets. Left alone, the kernel kills the job: no
step is recorded and the team sees a crash, one free bit about the features per run, without end
(docs/threat-model.md). Under the ceiling the same model's allocation fails inside onnxruntime,
its run raises, and the gate records the step as a failed model (a counted fail, like any other
failure on the test data).

The ceiling is the process's data limit (``RLIMIT_DATA``: private writable memory, which on
Linux 4.7 and later includes anonymous ``mmap``, where onnxruntime's and numpy's large blocks
live), set while the model runs to what the process already holds plus :data:`SHARE` of the
memory the machine has available (``MemAvailable``, or the room left under the control group's
memory limit when that is less: a container's limit), and restored after. So an honest model that
fits in memory runs as before; one that would not fit fails a little earlier, with an
allocation error instead of the OOM killer. Where the limit cannot be set (not Linux, no
``/proc``), nothing changes.
"""
from __future__ import annotations

import contextlib
import re

#: The share of the machine's available memory a model may take on top of what the gate holds.
SHARE = 0.85


def available_bytes() -> int | None:
    """The memory this process may still take: the machine's ``MemAvailable``, or less where its
    control group (a container's memory limit) leaves less room; None when unknown."""
    machine = _meminfo_field("/proc/meminfo", "MemAvailable")
    group = _cgroup_room()
    if machine is None or group is None:
        return machine if group is None else group
    return min(machine, group)


def _cgroup_room(proc: str = "/proc/self/cgroup", sys_root: str = "/sys/fs/cgroup") -> int | None:
    """Limit minus usage of this process's memory control group (v2 or v1), or None."""
    try:
        with open(proc) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            pair = (sys_root, "memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1
            pair = (sys_root + "/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        root, limit_name, usage_name = pair
        for folder in (root + path, root):  # the group's own folder, or its mount's root
            limit, usage = _read_int(f"{folder}/{limit_name}"), _read_int(f"{folder}/{usage_name}")
            if limit is not None and usage is not None:
                if limit >= 2**60:  # "max" or the v1 stand-in for no limit
                    break
                return max(0, limit - usage)
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    if text == "max":
        return 2**62
    return int(text) if text.isdigit() else None


def data_bytes() -> int | None:
    """This process's private writable memory (``VmData`` of /proc/self/status), or None."""
    return _meminfo_field("/proc/self/status", "VmData")


def _meminfo_field(path: str, name: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    m = re.search(rf"^{name}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


@contextlib.contextmanager
def memory_ceiling():
    """Cap this process's data segment while the block runs (see the module docstring)."""
    try:
        import resource
    except ImportError:  # not POSIX
        yield None
        return
    held, free = data_bytes(), available_bytes()
    if held is None or free is None:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = held + int(SHARE * free)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        yield None
        return
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
