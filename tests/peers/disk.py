"""A small real disk for the tests: a tmpfs of a given size mounted on a folder (needs root)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mount_tmpfs(path: Path, size: str = "24m") -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs for the disk-full fault (run as root): "
                           f"{proc.stderr.strip()}")


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
