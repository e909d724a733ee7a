"""What the two benchmarks share: the machine line, JSON output, access to a table's
ctypes handle and statistics. Not a benchmark itself."""

from __future__ import annotations

import json
import os
import platform
import statistics as stats
import time
from typing import Any, Dict, Sequence


def machine() -> Dict[str, Any]:
    """The machine the figures come from."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def machine_line() -> str:
    m = machine()
    return f"machine: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}"


def median(values: Sequence[float]) -> float:
    return float(stats.median(values))


def write_json(path: str | None, report: Dict[str, Any]) -> None:
    if not path:
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"JSON: {path}")


def table_handle(table: Any) -> int:
    """The ``strata_table *`` of a ``strata`` table, as an int for ctypes."""
    for name in ("_handle", "handle", "_as_parameter_", "_table", "_pointer"):
        value = getattr(table, name, None)
        if value is None:
            continue
        if hasattr(value, "value"):        # a ctypes c_void_p
            value = value.value
        if isinstance(value, int) and value:
            return value
    raise RuntimeError(f"cannot find the C handle of {table!r} (looked for _handle, handle, ...)")


def table_statistics(table: Any) -> Dict[str, Any]:
    """``table.statistics()`` as a plain dict in the JSON's snake_case shape
    ({"record_bytes", "rows": {...}, "traffic": {...}, ...})."""
    s = table.statistics()
    if not isinstance(s, dict):
        s = _as_dict(s)
    # The C library's JSON wraps the statistics with the spec; accept both shapes.
    if "statistics" in s and isinstance(s["statistics"], dict):
        s = s["statistics"]
    return s


def _as_dict(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_dict(v) for k, v in value.items()}
    if hasattr(value, "_asdict"):
        return {k: _as_dict(v) for k, v in value._asdict().items()}
    if hasattr(value, "__dataclass_fields__"):
        return {k: _as_dict(getattr(value, k)) for k in value.__dataclass_fields__}
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {k: _as_dict(v) for k, v in vars(value).items() if not k.startswith("_")}
    return value


# Other work on the machine makes the figures low and noisy, so each measurement is checked:
# the CPU time the whole machine used during it (from /proc/stat, steal included) minus this
# process's own, as a share of all CPUs (as tools/compare-pytorch.sh checks its runs).
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # user nice system irq softirq steal
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8)) / _HZ


class OtherLoad:
    """``with OtherLoad() as load: ...`` then ``load.share``: the fraction of all CPUs other
    processes used during the block (None where /proc/stat cannot be read)."""

    def __enter__(self) -> "OtherLoad":
        self._busy = _machine_busy_seconds()
        t = os.times()
        self._own = t.user + t.system
        self._wall = time.perf_counter()
        self.share = None
        return self

    def __exit__(self, *exc_info: object) -> None:
        busy = _machine_busy_seconds()
        t = os.times()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return
        others = (busy - self._busy) - (t.user + t.system - self._own)
        self.share = max(0.0, others / (wall * (os.cpu_count() or 1)))


def load_note(share: float | None, what: str) -> str:
    """A line for the output: how much of the CPUs others used during `what`."""
    if share is None:
        return ""
    text = f"other processes used {100 * share:.0f}% of the CPUs during {what}"
    if share > 0.10:
        text = "warning: " + text + "; its figures are not reliable (rerun on an idle machine)"
    return text


def wait_idle(seconds: float) -> None:
    """Waits up to `seconds` for a second in which the CPUs are under 10% busy."""
    if seconds <= 0:
        return
    deadline = time.monotonic() + seconds
    while True:
        a = _machine_busy_seconds()
        time.sleep(1.0)
        b = _machine_busy_seconds()
        if a is None or b is None:
            return
        busy = (b - a) / (os.cpu_count() or 1)
        if busy < 0.10:
            return
        if time.monotonic() >= deadline:
            print(f"warning: the CPUs are still {100 * busy:.0f}% busy after waiting {seconds:g} s; running anyway",
                  flush=True)
            return
