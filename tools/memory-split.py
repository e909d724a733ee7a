#!/usr/bin/env python3
"""Runs a command in a memory cgroup of its own and shows how its memory splits.

    tools/memory-split.py [--limit-mb N] [--interval S] [--csv FILE] -- COMMAND ARGS...

Makes a cgroup under the one this script runs in (cgroup v1's memory controller, or cgroup
v2 where it holds the memory controller), with `--limit-mb` as its limit
(memory.limit_in_bytes, or memory.max), starts COMMAND in it and samples every `--interval`
seconds (default 0.1) until it exits:
  - the process: /proc/PID/status (VmRSS, RssAnon, RssFile, RssShmem) and
    /proc/PID/smaps_rollup (Shared_Dirty, Private_Dirty: dirty pages it maps);
  - the cgroup: usage, and from memory.stat anonymous (rss / anon), page cache (cache / file),
    mapped file pages, dirty, writeback, active and inactive file pages; and kernel memory
    charged to it (v1: memory.kmem.usage_in_bytes; v2: memory.stat's kernel), which the
    limit counts too; and the sum of anonymous, dirty, writeback and kernel memory
    (cg_anon_dirty_kernel): what reclaim cannot drop without writing back or freeing first.
Prints the largest value of each over the run, the cgroup's peak usage, its failure count and
OOM kills, and the command's exit status; with --csv, every sample. The cgroup is removed at
the end. Needs root (or a delegated cgroup). A measuring tool: CI does not run it.
"""
import argparse
import os
import signal
import subprocess
import sys
import time


def own_memory_cgroup():
    """(version, directory) of the memory cgroup this process is in, or None."""
    v1_root, v2_root = "/sys/fs/cgroup/memory", None
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                v2_root = parts[1]
            elif parts[2] == "cgroup" and "memory" in parts[3].split(","):
                v1_root = parts[1]
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(",") and os.path.isdir(v1_root):
                return 1, v1_root + path
            if controllers == "" and v2_root is not None:
                controllers_file = os.path.join(v2_root, "cgroup.controllers")
                if os.path.exists(controllers_file) and "memory" in open(controllers_file).read().split():
                    return 2, v2_root + path
    return None


def read_keyed(path):
    values = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    values[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return values


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-mb", type=float, help="the cgroup's memory limit, MiB (default: none)")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--csv", help="write every sample to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        parser.error("no command")
    found = own_memory_cgroup()
    if found is None:
        sys.exit("memory-split: no writable memory cgroup controller here")
    version, parent = found
    group = os.path.join(parent, "strata-split-%d" % os.getpid())
    os.mkdir(group)
    try:
        if a.limit_mb is not None:
            limit = int(a.limit_mb * (1 << 20))
            with open(os.path.join(group, "memory.limit_in_bytes" if version == 1 else "memory.max"), "w") as f:
                f.write(str(limit))
        # Anonymous memory over the limit must show as an OOM kill, not go to swap.
        try:
            with open(os.path.join(group, "memory.swappiness" if version == 1 else "memory.swap.max"), "w") as f:
                f.write("0")
        except OSError:
            pass
        procs = os.path.join(group, "cgroup.procs")
        child = subprocess.Popen(["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs] + command)
        names = ["t", "rss", "anon", "file", "shmem", "shared_dirty", "private_dirty",
                 "usage", "cg_anon", "cg_cache", "cg_mapped", "cg_dirty", "cg_writeback", "cg_active_file", "cg_inactive_file",
                 "cg_kernel", "cg_anon_dirty_kernel"]
        samples = []
        started = time.monotonic()
        while child.poll() is None:
            status = read_keyed("/proc/%d/status" % child.pid)
            smaps = read_keyed("/proc/%d/smaps_rollup" % child.pid)
            stat = read_keyed(os.path.join(group, "memory.stat"))
            usage = read_int(os.path.join(group, "memory.usage_in_bytes" if version == 1 else "memory.current"))
            kb = lambda d, k: d.get(k, 0) * 1024
            if version == 1:
                cg = [stat.get("rss", 0), stat.get("cache", 0), stat.get("mapped_file", 0), stat.get("dirty", 0),
                      stat.get("writeback", 0), stat.get("active_file", 0), stat.get("inactive_file", 0),
                      read_int(os.path.join(group, "memory.kmem.usage_in_bytes")) or 0]
            else:
                kernel = stat.get("kernel", sum(stat.get(k, 0) for k in ("slab", "kernel_stack", "pagetables", "percpu", "sock")))
                cg = [stat.get("anon", 0), stat.get("file", 0), stat.get("file_mapped", 0), stat.get("file_dirty", 0),
                      stat.get("file_writeback", 0), stat.get("active_file", 0), stat.get("inactive_file", 0), kernel]
            # What reclaim cannot drop without writing or freeing: the part a limit must hold.
            cg.append(cg[0] + cg[3] + cg[4] + cg[7])
            if status:
                samples.append([time.monotonic() - started, kb(status, "VmRSS"), kb(status, "RssAnon"), kb(status, "RssFile"),
                                kb(status, "RssShmem"), kb(smaps, "Shared_Dirty"), kb(smaps, "Private_Dirty"), usage or 0] + cg)
            time.sleep(a.interval)
        code = child.wait()
        if version == 1:
            peak = read_int(os.path.join(group, "memory.max_usage_in_bytes"))
            failures = read_int(os.path.join(group, "memory.failcnt"))
            oom = read_keyed(os.path.join(group, "memory.oom_control")).get("oom_kill")
        else:
            peak = read_int(os.path.join(group, "memory.peak"))
            failures = read_keyed(os.path.join(group, "memory.events")).get("max")
            oom = read_keyed(os.path.join(group, "memory.events")).get("oom_kill")
        if a.csv:
            with open(a.csv, "w") as f:
                f.write(",".join(names) + "\n")
                for s in samples:
                    f.write(",".join("%.2f" % s[0] if i == 0 else str(v) for i, v in enumerate(s)) + "\n")
        mb = lambda b: "%.1f MB" % (b / 1e6)
        print("memory-split: cgroup v%d %s, limit %s" % (version, group, "none" if a.limit_mb is None else "%g MiB" % a.limit_mb))
        print("memory-split: exit status %s; %d samples over %.1f s" % (code if code >= 0 else "signal %d" % -code, len(samples),
                                                                        samples[-1][0] if samples else 0))
        if samples:
            print("memory-split: largest  " + ", ".join("%s %s" % (n, mb(max(s[i] for s in samples))) for i, n in enumerate(names) if i > 0))
        print("memory-split: cgroup peak usage %s, failcnt %s, oom_kill %s" % (mb(peak or 0), failures, oom))
        return 0 if code == 0 else 1
    finally:
        # The cgroup goes once its process has; a dead process leaves it within moments.
        for _ in range(50):
            try:
                os.rmdir(group)
                break
            except OSError:
                time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
