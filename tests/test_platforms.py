"""The output-folder lock of ``nmsg batch`` on POSIX and, with a stubbed ``msvcrt``, on
Windows: a second run into the same folder is refused in one line on every OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_nmsg.batch.inputs import folder_lock
from napari_nmsg.errors import InputError


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(InputError, match="another nmsg batch run is writing into"):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):  # released: the next run may go
        pass


WINDOWS = """
import errno, fcntl, sys, types

def locking(fd, mode, nbytes):  # msvcrt's: EACCES when another handle holds the byte
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OSError(errno.EACCES, "Permission denied") from None

sys.modules["msvcrt"] = types.SimpleNamespace(LK_NBLCK=2, locking=locking)
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
sys.modules["resource"] = None
from napari_nmsg.batch.inputs import folder_lock
from napari_nmsg.errors import InputError
folder = sys.argv[1]
with folder_lock(__import__("pathlib").Path(folder)):
    try:
        with folder_lock(__import__("pathlib").Path(folder)):
            print("not refused")
    except InputError as exc:
        print("refused:", exc)
"""


def test_windows_locks_with_msvcrt(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", WINDOWS, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused: another nmsg batch run is writing into")
