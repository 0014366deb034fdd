"""Atomic writes under SIGKILL: a killed writer publishes nothing, and its temporaries (which no cleanup
code could remove) are swept by the next write of the same path, while a live writer's are left alone."""

import signal
import subprocess
import sys
import textwrap

from sftpipe.io import read_jsonl, sweep_stale, write_jsonl

HOLD = textwrap.dedent("""
    import sys, time
    from sftpipe.io import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        with open(tmp, "w") as fh:
            fh.write('{"id": "partial"}\\n')
        print("ready", flush=True)
        time.sleep(120)
""")


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _temporaries(path):
    return sorted(path.parent.glob(f".{path.name}.*"))


def test_a_writer_killed_mid_write_publishes_nothing_and_the_next_write_sweeps_its_temporary(tmp_path):
    out = tmp_path / "data" / "kept.jsonl"
    proc = _holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stale = _temporaries(out)
    assert not out.exists() and len(stale) == 1 and f".kept.jsonl.{proc.pid}." in stale[0].name
    write_jsonl(out, [{"id": "a"}])
    assert read_jsonl(out) == [{"id": "a"}] and _temporaries(out) == []


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    out = tmp_path / "kept.jsonl"
    proc = _holder(out)
    try:
        write_jsonl(out, [{"id": "a"}])
        assert [p.name.split(".")[3] for p in _temporaries(out)] == [str(proc.pid)]
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_sweep_stale_matches_prefix_and_dead_pid_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    import os

    (tmp_path / f"sftpipe-dedup-{pid}.x1").mkdir()
    (tmp_path / f"sftpipe-dedup-{pid}.x1" / "word0.u64").write_bytes(b"\0" * 64)
    (tmp_path / f"sftpipe-dedup-{os.getpid()}.x2").mkdir()        # this process: alive
    (tmp_path / "sftpipe-dedup-notapid").mkdir()                  # not ours to judge
    (tmp_path / f"other-{pid}.x3").mkdir()                       # another prefix
    gone = sweep_stale(tmp_path, "sftpipe-dedup-")
    assert [g.name for g in gone] == [f"sftpipe-dedup-{pid}.x1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"sftpipe-dedup-{os.getpid()}.x2", "sftpipe-dedup-notapid", f"other-{pid}.x3"])
