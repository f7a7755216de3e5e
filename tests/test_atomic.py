"""Atomic commits (jaxreg.files.commit) under real SIGKILLs, concurrent writers and stale
temporaries, through jaxreg.store and jaxreg.checkpoint (NumPy trees only: no JAX compute).

The kill tests run one subprocess per case that imports jaxreg once and forks, for every
call number N, a child that saves over an existing folder and kills itself with SIGKILL
right before (or right after) its N-th call that changes the folder (``os.open`` with
``O_CREAT``, ``mkdir``, ``rename``, ``replace``, ``symlink``, ``unlink``, ``rmdir``). The
test then checks every folder from this process.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from jaxreg import checkpoint, files, store
from jaxreg.files import TMP_PREFIX

# Shared by this module and the subprocess scripts, so both build the same versions.
_COMMON = '''
import numpy as np
from jaxreg.data import Standardizer
from jaxreg.model import Layer, MLPSpec

SPEC = MLPSpec((2, 3, 1), init="glorot_uniform", bias_init="zeros", key_scheme="split")
XS = Standardizer(np.array([0.1, -2.0]), np.array([1.5, 3.0]))
YS = Standardizer(np.array([7.25]), np.array([0.3]))


def params(v):
    """Two members' layers; every value differs by position and by the version v."""
    out = []
    for a, b in zip(SPEC.layer_sizes[:-1], SPEC.layer_sizes[1:]):
        w = np.arange(2 * a * b, dtype=np.float32).reshape(2, a, b) + 1000 * v
        out.append(Layer(w, np.full((2, 1, b), -v, np.float32)))
    return tuple(out)


def state(v):
    """A checkpointed pytree of NumPy leaves for version v."""
    return {"params": (np.arange(12, dtype=np.float32).reshape(3, 4) + 1000 * v,
                       np.full((4,), -v, np.float64)),
            "step": np.int32(v)}
'''
_NS: dict = {}
exec(_COMMON, _NS)
SPEC, XS, YS, params, state = (_NS[k] for k in ("SPEC", "XS", "YS", "params", "state"))

OLD, NEW, NEXT = 1, 2, 3

_KILL_SCRIPT = (
    _COMMON
    + '''
import json, os, pathlib, signal, sys, traceback

root, case = pathlib.Path(sys.argv[1]), sys.argv[2]
if case == "checkpoint":
    from jaxreg import checkpoint
else:
    from jaxreg import store


def save_model(path, v):
    store.save_model(path, SPEC, params(v), XS, YS)


def save_report(path, v):
    document = store.build_document(SPEC, params(v), XS, YS)
    with store.ModelWriter(path) as writer:
        staged = writer.stage_folder()
        (staged / "index.html").write_text(f"report {v}")
        writer.commit(document, report=staged)


def save_checkpoint(path, v):
    checkpoint.save_checkpoint(path, {"state": state(v)}, {"v": v})


save = {"model": save_model, "report": save_report, "checkpoint": save_checkpoint}[case]
NAMES = ("open", "mkdir", "rename", "replace", "symlink", "unlink", "rmdir")
REAL = {name: getattr(os, name) for name in NAMES}


def instrument(kill_at, after):
    """Count the calls that change a folder; SIGKILL this process at call kill_at."""
    calls = []

    def wrap(name):
        real = REAL[name]

        def wrapper(*args, **kwargs):
            if name == "open":
                flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
                if not flags & os.O_CREAT:
                    return real(*args, **kwargs)
            target = args[1] if name in ("rename", "replace", "symlink") else args[0]
            calls.append([name, os.path.basename(os.fspath(target))])
            k = len(calls)
            if k == kill_at and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                return real(*args, **kwargs)
            finally:
                if k == kill_at and after:
                    os.kill(os.getpid(), signal.SIGKILL)
        return wrapper

    for name in NAMES:
        setattr(os, name, wrap(name))
    return calls


measure = root / "measure"
save(measure, 1)
calls = instrument(0, False)  # a full save, never killed: its calls
save(measure, 2)
for name in NAMES:
    setattr(os, name, REAL[name])

runs = []
for variant in ("before", "after"):
    for n in range(1, len(calls) + 1):
        path = root / f"{variant}-{n}"
        save(path, 1)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                instrument(n, variant == "after")
                save(path, 2)
            except BaseException:
                traceback.print_exc()
                code = 3
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        runs.append({"variant": variant, "n": n, "path": str(path),
                     "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                     "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None})
print(json.dumps({"calls": calls, "measure": str(measure), "runs": runs}))
'''
)


def _run_script(script, *args, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _model_version(path):
    """The version v whose params(v) the model at path holds exactly, else None."""
    loaded = store.load_model(path).params
    for v in (OLD, NEW, NEXT):
        if all(
            np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b) and a.W.dtype == b.W.dtype
            for a, b in zip(loaded, params(v), strict=True)
        ):
            return v
    return None


def _checkpoint_version(path):
    trees, meta = checkpoint.load_checkpoint(path, {"state": state(0)})
    got = trees["state"]
    for v in (OLD, NEW, NEXT):
        want = state(v)
        if (
            all(
                np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype
                for a, b in zip(got["params"], want["params"], strict=True)
            )
            and np.array_equal(got["step"], want["step"])
            and meta == {"v": v}
        ):
            return v
    return None


def _manifest(path, name):
    return json.loads((path / name).read_text())


def _report_version(path):
    """Check the report the manifest names (present, with its file); return its version."""
    doc = _manifest(path, store.META_FILE)
    report = path / doc["files"]["report"]
    text = (report / "index.html").read_text()
    link = path / "report"
    if os.path.lexists(link):  # the stable link may lag the manifest, never dangle
        assert link.is_symlink() and link.resolve().is_dir(), sorted(os.listdir(path))
    return int(text.removeprefix("report "))


def _save_report(path, v):
    document = store.build_document(SPEC, params(v), XS, YS)
    with store.ModelWriter(path) as writer:
        staged = writer.stage_folder()
        (staged / "index.html").write_text(f"report {v}")
        writer.commit(document, report=staged)


CASES = {
    # case: (load -> version, one more save, manifest, files the manifest names)
    "model": (
        _model_version,
        lambda p, v: store.save_model(p, SPEC, params(v), XS, YS),
        store.META_FILE,
        lambda d: {d["files"]["weights"]},
    ),
    "report": (
        _model_version,
        _save_report,
        store.META_FILE,
        lambda d: {d["files"]["weights"], d["files"]["report"], "report"},
    ),
    "checkpoint": (
        _checkpoint_version,
        lambda p, v: checkpoint.save_checkpoint(p, {"state": state(v)}, {"v": v}),
        checkpoint.META_FILE,
        lambda d: {d["tensors_file"]},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_sigkill_at_any_call_leaves_the_old_or_the_new_version(tmp_path, case):
    load_version, save, manifest, named = CASES[case]
    out, stderr = _run_script(_KILL_SCRIPT, tmp_path, case)
    calls = [tuple(c) for c in out["calls"]]
    print(case, len(calls), "calls:", calls)
    # The instrumentation saw the whole commit: the weights, the commit point, the clean-up.
    commit_point = calls.index(("replace", manifest)) + 1  # 1-based call number
    assert any(name == "unlink" for name, _ in calls)  # the old weights went
    if case == "report":
        assert calls[0][0] == "mkdir" and any(c[0] == "symlink" for c in calls)
        assert ("replace", "report") in calls and any(c[0] == "rename" for c in calls)
        assert any(c[0] == "rmdir" for c in calls)  # the old report folder went
    assert load_version(out["measure"]) == NEW
    assert len(out["runs"]) == 2 * len(calls)
    assert "Traceback" not in stderr, stderr[-4000:]

    for run in out["runs"]:
        path, n = tmp_path / os.path.basename(run["path"]), run["n"]
        where = f"{case}: SIGKILL {run['variant']} call {n} {calls[n - 1]}"
        assert run["signal"] == signal.SIGKILL and run["exit"] is None, (where, run)
        version = load_version(path)
        # Killed before the manifest's replacement: the old version; after it: the new one.
        killed_after_commit = n > commit_point or (n == commit_point and run["variant"] == "after")
        assert version == (NEW if killed_after_commit else OLD), (where, version)
        if case == "report":
            assert _report_version(path) == version, where
        # One more save cleans up whatever the killed writer left.
        save(path, NEXT)
        assert load_version(path) == NEXT, where
        doc = _manifest(path, manifest)
        assert sorted(os.listdir(path)) == sorted({manifest} | named(doc)), where
        if case == "report":
            assert _report_version(path) == NEXT
            assert os.readlink(path / "report") == doc["files"]["report"], where


_CONCURRENT_SCRIPT = (
    _COMMON
    + """
import json, multiprocessing, pathlib, sys
from jaxreg import store

path, procs, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def work(p, barrier):
    barrier.wait()
    for i in range(rounds):
        store.save_model(path, SPEC, params(100 + 10 * p + i), XS, YS)


ctx = multiprocessing.get_context("fork")
barrier = ctx.Barrier(procs)
workers = [ctx.Process(target=work, args=(p, barrier)) for p in range(procs)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps([w.exitcode for w in workers]))
"""
)


@pytest.mark.parametrize("fresh", [False, True], ids=["over-a-model", "fresh-path"])
def test_concurrent_saves_to_one_path(tmp_path, fresh):
    procs, rounds = 4, 10
    path = tmp_path / "m"
    if not fresh:
        store.save_model(path, SPEC, params(OLD), XS, YS)
    codes, stderr = _run_script(_CONCURRENT_SCRIPT, path, procs, rounds)
    assert codes == [0] * procs, stderr[-4000:]
    # Last writer wins: the folder holds, whole, the last save of one of the writers.
    loaded = store.load_model(path).params
    last = [100 + 10 * p + rounds - 1 for p in range(procs)]
    matches = [
        v
        for v in last
        if all(
            np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)
            for a, b in zip(loaded, params(v), strict=True)
        )
    ]
    assert len(matches) == 1, loaded
    doc = _manifest(path, store.META_FILE)
    assert sorted(os.listdir(path)) == sorted([store.META_FILE, doc["files"]["weights"]])


def _tmp(path, tag):
    return path / f"{TMP_PREFIX}{tag * 32}"


def test_stale_temporaries_go_and_live_ones_stay(tmp_path):
    path = tmp_path / "m"
    store.save_model(path, SPEC, params(OLD), XS, YS)
    # Left by killed writers (nobody holds a lock): a file, a folder with a file, a link.
    stale_file, stale_dir, stale_link = _tmp(path, "a"), _tmp(path, "b"), _tmp(path, "c")
    stale_file.write_bytes(b"half a weights file")
    stale_dir.mkdir()
    (stale_dir / "index.html").write_text("half a report")
    os.symlink("report-0123456789abcdef", stale_link)
    # Held by a live writer: a file and a folder, each locked as files.Staging does (flock
    # locks belong to an open file description, so this process's own lock counts).
    live_file, live_dir = _tmp(path, "d"), _tmp(path, "e")
    live_file.write_bytes(b"being written")
    live_dir.mkdir()
    (live_dir / "index.html").write_text("being staged")
    (path / "notes.txt").write_text("not jaxreg's")
    fds = [os.open(live_file, os.O_RDONLY), os.open(live_dir, os.O_RDONLY)]
    try:
        for fd in fds:
            fcntl.flock(fd, fcntl.LOCK_EX)
        store.save_model(path, SPEC, params(NEW), XS, YS)
        assert _model_version(path) == NEW
        for stale in (stale_file, stale_dir, stale_link):
            assert not os.path.lexists(stale), sorted(os.listdir(path))
        assert live_file.read_bytes() == b"being written"
        assert (live_dir / "index.html").read_text() == "being staged"
    finally:
        for fd in fds:
            os.close(fd)
    # The writer is gone (its locks with it): the next save removes what it left.
    store.save_model(path, SPEC, params(NEXT), XS, YS)
    doc = _manifest(path, store.META_FILE)
    assert sorted(os.listdir(path)) == sorted(
        [store.META_FILE, doc["files"]["weights"], "notes.txt"]
    )
    assert (path / "notes.txt").read_text() == "not jaxreg's"


_KILL_BEFORE_COMMIT_SCRIPT = (
    _COMMON
    + """
import os, signal, sys
case, path = sys.argv[1], sys.argv[2]
if case == "checkpoint":
    from jaxreg import checkpoint
    manifest = checkpoint.META_FILE
else:
    from jaxreg import store
    manifest = store.META_FILE
real_replace = os.replace


def replace(src, dst):
    if os.path.basename(dst) == manifest:  # the commit point: die right before it
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)


os.replace = replace
if case == "checkpoint":
    checkpoint.save_checkpoint(path, {"state": state(2)}, {"v": 2})
else:
    store.save_model(path, SPEC, params(2), XS, YS)
"""
)


@pytest.mark.parametrize(
    "case, fresh",
    [
        ("model", False),
        ("model", True),
        ("checkpoint", True),
    ],
    ids=["model-existing", "model-fresh", "checkpoint-fresh"],
)
def test_a_writer_killed_before_its_commit_point_leaves_what_the_next_save_removes(
    tmp_path, case, fresh
):
    # A real writer stages its files (locked temporaries), publishes the weights and is
    # killed before its commit point; what it left is unlocked and goes with the next save.
    load_version, save, manifest, named = CASES[case]
    path = tmp_path / "m"
    if not fresh:
        save(path, OLD)
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_BEFORE_COMMIT_SCRIPT, case, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-4000:]
    left = sorted(os.listdir(path))
    assert len([e for e in left if e.startswith(TMP_PREFIX)]) == 1, left  # the manifest
    assert manifest in left if not fresh else manifest not in left
    if fresh:
        with pytest.raises(FileNotFoundError):
            load_version(path)
    else:
        assert load_version(path) == OLD
    save(path, NEXT)
    assert load_version(path) == NEXT
    assert sorted(os.listdir(path)) == sorted({manifest} | named(_manifest(path, manifest)))


_KILLED_WRITE_SCRIPT = """
import os, signal, sys
from jaxreg.files import writing
with writing(sys.argv[1]) as fh:
    fh.write(b"half of the new predictions")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_file_write_leaves_the_old_file_and_the_next_write_removes_its_temporary(
    tmp_path,
):
    """``files.writing`` (predictions, reports, plots): a writer killed mid-write leaves the
    old file whole and its own temporary, which the next write into that folder removes;
    a live writer's temporary and the user's files stay."""
    path = tmp_path / "preds.csv"
    path.write_bytes(b"old predictions")
    (tmp_path / ".preds.csv.abc.tmp").write_bytes(b"the user's, not jaxreg's")
    out = subprocess.run([sys.executable, "-c", _KILLED_WRITE_SCRIPT, str(path)])
    assert out.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"old predictions"
    left = [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert len(left) == 1 and left[0].read_bytes() == b"half of the new predictions"
    live = _tmp(tmp_path, "f")
    live.write_bytes(b"being written")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a live writer holds its temporary
        with files.writing(path) as fh:
            fh.write(b"new predictions")
        assert path.read_bytes() == b"new predictions"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [".preds.csv.abc.tmp", "preds.csv", live.name]
        )
        assert live.read_bytes() == b"being written"
    finally:
        os.close(fd)
    # The other writer is gone (its lock with it). A write that raises leaves the old
    # content and no temporary of its own, and has removed what that writer left.
    with pytest.raises(RuntimeError), files.writing(path) as fh:
        fh.write(b"never published")
        raise RuntimeError("stop")
    assert path.read_bytes() == b"new predictions"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".preds.csv.abc.tmp", "preds.csv"]
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_WRITE_UNDER_LOCK_SCRIPT = """
import sys
from jaxreg import files
folder = sys.argv[1]
with files.folder_lock(folder), files.Staging(folder, folder_locked=True) as staging:
    stage = staging.folder()  # locked by this process, as a report's staging folder is
    with files.writing(stage / "report.html") as fh:
        fh.write(b"a page")
    with files.writing(folder + "/preds.csv") as fh:
        fh.write(b"rows")
    print((stage / "report.html").read_text())
"""


def test_a_file_written_where_this_process_holds_the_lock_does_not_wait_for_it(tmp_path):
    """``files.writing`` into a folder whose lock this process holds (a commit, a staged
    report folder) writes without cleaning: waiting for the lock would never end."""
    out = subprocess.run(
        [sys.executable, "-c", _WRITE_UNDER_LOCK_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "a page"
    assert (tmp_path / "preds.csv").read_bytes() == b"rows"
