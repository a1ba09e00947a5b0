"""Small real disks for the tests (need root): a tmpfs of a given size mounted on a folder, and a
loop-mounted ext4 image that can be frozen or turned read-only under open files."""

from __future__ import annotations

import os
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


def mount_ext4(image: Path, path: Path, size: str = "32M") -> None:
    """A loop-mounted ext4 image at `path` (needs root). Mounted `errors=remount-ro`, as a
    gateway's root usually is: `make_read_only` then turns it read-only under open files, which
    `mount -o remount,ro` refuses while a file is open for writing (EBUSY). ext4, unlike tmpfs,
    can also be frozen (`freeze`)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    proc = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot loop-mount an ext4 image (run as root): "
                           f"{proc.stderr.strip()}")


def _device(path: Path) -> str:
    """The block device (e.g. loop3) mounted at `path`."""
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, *_ = line.split()
        if mnt == str(path):
            return Path(os.path.realpath(dev)).name
    raise RuntimeError(f"nothing mounted at {path}")


def make_read_only(path: Path) -> None:
    """What the kernel does after an I/O error on an `errors=remount-ro` ext4: from now on every
    write to the filesystem at `path` fails (EROFS, SQLite: disk I/O error), open files too."""
    Path(f"/sys/fs/ext4/{_device(path)}/trigger_fs_error").write_text("test: read-only\n")


def freeze(path: Path) -> None:
    """Stall every write to the filesystem at `path` until `unfreeze` (fsfreeze(8))."""
    subprocess.run(["fsfreeze", "--freeze", str(path)], check=True)


def unfreeze(path: Path) -> None:
    subprocess.run(["fsfreeze", "--unfreeze", str(path)], capture_output=True, check=False)


def unmount_ext4(path: Path) -> None:
    """Thaw (in case a test failed while frozen) and unmount; the loop device goes with it."""
    unfreeze(path)
    unmount(path)
