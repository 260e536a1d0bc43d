"""`impactframe._fs`: the one atomic write, private folder and file lock (cache, export, CLI).

Behaviour tests on real files and real processes: an interrupted write (an exception, or a
process killed mid-write) leaves the old file whole; the modes ``0600``/``0700`` go only on
what `_fs` creates; a lock held by one process excludes another.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactframe._fs import (
    atomic_output,
    atomic_write,
    lock_file,
    path_lock,
    private_dir,
    unlock_file,
)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and flock")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def run(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


# -- atomic writes -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(old=st.binary(max_size=2000), new=st.binary(max_size=2000) | st.text(max_size=500))
def test_atomic_write_replaces_whole_or_not_at_all(tmp_path_factory, old, new) -> None:
    folder = tmp_path_factory.mktemp("w")
    target = folder / "entry.bin"
    target.write_bytes(old)
    atomic_write(target, new)
    assert target.read_bytes() == (new.encode() if isinstance(new, str) else new)
    assert [p.name for p in folder.iterdir()] == ["entry.bin"]  # no temporary left


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "chart.png"
    target.write_bytes(b"old")
    seen = []

    def interrupted() -> None:
        with atomic_output(target, durable=True) as temporary:
            seen.append(temporary)
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert seen[0].parent == tmp_path
    assert seen[0].suffix == ".png"
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]


@posix_only
def test_a_process_killed_mid_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old" * 1000)
    child = run(
        """
        import sys, time
        from impactframe._fs import atomic_output
        with atomic_output(sys.argv[1]) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"new" * 500)
                handle.flush()
                print("half", flush=True)
                time.sleep(60)
        """,
        str(target),
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "half\n"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)
    assert target.read_bytes() == b"old" * 1000
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".tmp-")


def test_atomic_output_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):  # noqa: SIM117
        with atomic_output(tmp_path / "no" / "file.csv"):
            pass
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_atomic_write_modes(tmp_path: Path) -> None:
    shared = tmp_path / "results.md"
    shared.write_text("old")
    shared.chmod(0o640)
    with umask(0):
        atomic_write(shared, "new", mode=None, durable=False)  # keeps the file's mode
        assert (shared.read_text(), mode(shared)) == ("new", 0o640)
        atomic_write(tmp_path / "fresh.md", "x", mode=None)  # the umask's default
        assert mode(tmp_path / "fresh.md") == 0o666
        atomic_write(shared, b"private")  # 0600 whatever the umask and the old mode
        assert mode(shared) == 0o600


# -- private folders -----------------------------------------------------------------------------


@posix_only
def test_private_dir_sets_0700_only_on_folders_it_creates(tmp_path: Path) -> None:
    mine = tmp_path / "shared"
    mine.mkdir()
    mine.chmod(0o2775)
    with umask(0):
        private_dir(mine / "a" / "b")
        private_dir(mine)  # exists: untouched
    assert mode(mine) == 0o775
    assert mine.stat().st_mode & 0o2000
    assert mode(mine / "a") == 0o700
    assert mode(mine / "a" / "b") == 0o700


@posix_only
def test_private_dir_leaves_a_symlinks_target_alone(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    real.chmod(0o755)
    (tmp_path / "link").symlink_to(real)
    private_dir(tmp_path / "link")
    assert mode(real) == 0o755
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(FileExistsError):
        private_dir(file)


# -- locks ---------------------------------------------------------------------------------------

_TRY_LOCK = """
import sys
from pathlib import Path
from impactframe._fs import lock_file
print(lock_file(Path(sys.argv[1]), wait=False) is not None, flush=True)
"""


@posix_only
def test_a_held_lock_excludes_a_second_process(tmp_path: Path) -> None:
    name = tmp_path / "entry.lock"
    fd = lock_file(name)
    assert fd is not None
    assert mode(name) == 0o600
    try:
        out, _ = run(_TRY_LOCK, str(name)).communicate(timeout=30)
        assert out == "False\n"
    finally:
        unlock_file(fd)
    out, _ = run(_TRY_LOCK, str(name)).communicate(timeout=30)
    assert out == "True\n"


@posix_only
def test_a_waiting_process_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    name = tmp_path / "entry.lock"
    with path_lock(name).hold(), path_lock(name).hold():  # re-entrant in one process
        child = run(
            """
            import sys, time
            from pathlib import Path
            from impactframe._fs import path_lock
            print("waiting", flush=True)
            with path_lock(Path(sys.argv[1])).hold():
                print(time.time(), flush=True)
            """,
            str(name),
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "waiting\n"
        time.sleep(0.5)
        released = time.time()
    out, _ = child.communicate(timeout=30)
    got = float(out)
    assert got >= released
    assert path_lock(name).depth == 0
    assert path_lock(name).fd is None


@posix_only
def test_a_lock_follows_the_name_when_a_cleaner_unlinks_it(tmp_path: Path) -> None:
    # The export's stale-run cleaner unlinks lock files it can take; a run that locks the
    # unlinked inode would be unprotected, so `lock_file` locks the file the name points at.
    name = tmp_path / "run.lock"
    first = lock_file(name)
    assert first is not None
    name.unlink()
    second = lock_file(name, wait=False)  # a new file at the name: free
    assert second is not None
    assert os.path.samestat(os.fstat(second), os.stat(name))
    unlock_file(first)
    unlock_file(second)
