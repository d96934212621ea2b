"""A description of the machine a benchmark ran on, for the report."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "not available"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _disk(path: Path) -> str:
    source_fstype = _first_line(["findmnt", "-no", "SOURCE,FSTYPE", "-T", str(path)])
    parts = source_fstype.split()
    kind = ""
    if parts and parts[0].startswith("/dev/"):
        dev = Path(parts[0]).name.rstrip("0123456789")
        rotational = Path(f"/sys/block/{dev}/queue/rotational")
        if dev.startswith("nvme"):
            kind = ", NVMe"
        elif rotational.exists():
            # Virtual disks often report 1 whatever the backing store is.
            kind = ", rotational=" + rotational.read_text().strip()
    free = shutil.disk_usage(path).free / 1e9
    return f"{source_fstype}{kind}, {free:.0f} GB free"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def source_revision(repo: Path) -> str:
    """The checkout's commit (``-dirty`` with local changes), or "unknown"."""
    if not (repo / ".git").exists():
        return "unknown"
    return _first_line(["git", "-C", str(repo), "describe", "--always", "--dirty"])


def describe_machine(workdir: Path, bundlesync_version: str | None) -> dict[str, str]:
    load = os.getloadavg()
    return {
        "cpus": str(os.cpu_count()),
        "cpu model": _cpu_model(),
        "memory": _memory(),
        "disk (work dir)": _disk(workdir),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "rsync": _first_line(["rsync", "--version"]),
        "dovecot": _first_line(["dovecot", "--version"]) if shutil.which("dovecot") else "absent",
        "bundlesync": bundlesync_version or "absent",
        "source revision": source_revision(Path(__file__).resolve().parent.parent),
        "load average at start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def command_line(module: str, argv: list[str] | None) -> str:
    """The command as typed: ``python -m benchmarks.run --size medium``.

    The work directory is shown as ``DIR``: where it was changes nothing but the
    disk, which the machine's description names, and a report should not carry
    one machine's paths.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--workdir" and i + 1 < len(args):
            args[i + 1] = "DIR"
        elif arg.startswith("--workdir="):
            args[i] = "--workdir=DIR"
    return shlex.join(["python", "-m", module, *args])


def utc_now() -> str:
    """The date and time a run started, to the minute, in UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def header_lines(*, command: str, date: str, machine: dict[str, str]) -> list[str]:
    """What every report starts with: the command, the date, the machine, the revision."""
    short = ", ".join(f"{machine.get(k, '?')} {label}".strip() for k, label in (
        ("cpus", "CPUs"), ("cpu model", ""), ("memory", "RAM")))
    return [
        f"Command: `{command}`; run {date}; source revision "
        f"`{machine.get('source revision', 'unknown')}`; bundlesync "
        f"{machine.get('bundlesync', '?')}.",
        "",
        f"Machine: {short}; disk {machine.get('disk (work dir)', '?')}; "
        f"{machine.get('os', '?')}, Linux {machine.get('kernel', '?')}, Python "
        f"{machine.get('python', '?')}; load average at start "
        f"{machine.get('load average at start', '?')}.",
    ]
