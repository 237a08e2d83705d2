"""Fails in one line when the disk lacks room for a new venv (`make setup`); stdlib only, run before
the venv exists.

    python3 scripts/check_disk.py .venv
"""
import platform
import shutil
import sys
from pathlib import Path

# torch 2.14.1 + torchvision 0.29.1 on x86_64 are the CUDA build (5.6 GB in the venv, measured
# 2026-12-02), the rest of requirements.txt about 0.4 GB; aarch64 gets a CPU build (0.7 GB).
NEEDED_GIB = {"x86_64": 7.0}
DEFAULT_GIB = 2.0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    venv = Path(argv[0] if argv else ".venv").resolve()
    folder = next(p for p in [venv, *venv.parents] if p.exists())
    free = shutil.disk_usage(folder).free / 2**30
    needed = NEEDED_GIB.get(platform.machine(), DEFAULT_GIB)
    if free < needed:
        sys.exit(f"error: {folder}: {free:.1f} GiB free, a new venv ({venv.name}) needs about {needed:.0f} GiB")


if __name__ == "__main__":
    main()
