"""jaxreg.checkpoint: atomic pytree checkpoints and resumable chunked training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import checkpoint as ck
from jaxreg import runner
from jaxreg.data import Dataset
from jaxreg.engine import History, TrainConfig, make_engine
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams

SPEC = MLPSpec((2, 6, 1), activation="tanh", key_scheme="split")
CFG = TrainConfig(epochs=24, batch_size=8, sampling="shuffle", patience=4)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) + x[:, 1:] ** 2).astype(np.float32)
    return Dataset(x[:30], y[:30], x[30:], y[30:])


_STATES: dict = {}


def _state(data):
    if "s" not in _STATES:
        init = jax.jit(make_engine(SPEC, CFG).init)
        _STATES["s"] = init(jax.random.PRNGKey(3), data, Hparams(0.01).astype(np.float32))
    return _STATES["s"]


def _template(data, hp, spec=SPEC):
    """One model's state structure (the runner's template without the model axis)."""
    state, _ = runner.state_template(spec, CFG, data, hp, 1)
    return jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype), state)


def _resumable(
    data,
    hp,
    keys,
    chunk_epochs,
    path=None,
    every=None,
    resume=False,
    fingerprint=None,
    callback=None,
):
    """A checkpointed run through the runner, as MLPRegressor.fit(checkpoint=...) does it."""
    keys = jnp.stack(keys)
    checkpointer, start = None, None
    if path is not None:
        checkpointer = ck.Checkpointer(path, every=every, resume=resume)
        start = checkpointer.start(
            keys, runner.state_template(SPEC, CFG, data, hp, len(keys)), fingerprint or {}
        )
    callbacks = [c for c in (checkpointer, callback) if c is not None]
    out = runner.run(
        SPEC, CFG, data, hp, keys, resume=start, chunk_epochs=chunk_epochs, callbacks=callbacks
    )
    return out.result, checkpointer


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y, equal_nan=True)


def test_round_trip_is_exact_and_keeps_scalars_and_dtypes(tmp_path, data):
    state = _state(data)
    hist = History(
        np.arange(3, dtype=np.int32),
        np.ones((3, 1), np.float32),
        np.full((3, 1), np.nan, np.float32),
        np.zeros(3, np.float32),
    )
    ck.save_checkpoint(
        tmp_path / "c",
        {"state": state, "history": hist, "key": jax.random.PRNGKey(7)},
        {"epoch": 3},
    )
    tpl = _template(data, Hparams(0.01))
    trees, meta = ck.load_checkpoint(
        tmp_path / "c", {"state": tpl, "history": hist, "key": jax.random.PRNGKey(0)}
    )
    _equal(trees["state"], state)
    _equal(trees["history"], hist)
    assert np.array_equal(trees["key"], jax.random.PRNGKey(7)) and meta == {"epoch": 3}
    # The sidecar holds the layout, readable without the tensors; there is no pickle.
    doc = json.loads((tmp_path / "c" / ck.META_FILE).read_text())
    paths = {e["path"]: e for e in doc["layout"]["state"]}
    assert paths[".epoch"]["shape"] == [] and paths[".stopped"]["dtype"] == "bool"
    assert ".opt_state.inner_state[0].mu[0].W" in paths


def test_a_second_save_replaces_the_first_and_leaves_one_tensor_file(tmp_path, data):
    state = _state(data)
    ck.save_checkpoint(tmp_path / "c", {"s": state}, {"n": 1})
    ck.save_checkpoint(tmp_path / "c", {"s": state}, {"n": 2})
    assert len(list((tmp_path / "c").glob("state-*.safetensors"))) == 1
    assert ck.read_checkpoint_meta(tmp_path / "c")["meta"] == {"n": 2}


def test_a_crash_before_the_commit_keeps_the_previous_checkpoint(tmp_path, data, monkeypatch):
    state = _state(data)
    ck.save_checkpoint(tmp_path / "c", {"s": state}, {"n": 1})
    real = ck.os.replace

    def crash(src, dst):
        if str(dst).endswith(ck.META_FILE):
            raise OSError("killed")
        return real(src, dst)

    monkeypatch.setattr(ck.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        changed = jax.tree.map(
            lambda a: ~a if a.dtype == bool else a + jnp.ones((), a.dtype), state
        )
        ck.save_checkpoint(tmp_path / "c", {"s": changed}, {"n": 2})
    monkeypatch.undo()
    trees, meta = ck.load_checkpoint(tmp_path / "c", {"s": state})
    assert meta == {"n": 1}
    _equal(trees["s"], state)


def test_load_refuses_corrupted_mismatched_newer_and_missing(tmp_path, data):
    state = _state(data)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        ck.load_checkpoint(tmp_path / "none", {"s": state})
    ck.save_checkpoint(tmp_path / "c", {"s": state})
    other = _template(data, Hparams(), MLPSpec((2, 5, 1)))
    with pytest.raises(ck.CheckpointError, match=r"does not match this run: s/.params\[0\].W"):
        ck.load_checkpoint(tmp_path / "c", {"s": other})
    tensors = next((tmp_path / "c").glob("state-*"))
    blob = bytearray(tensors.read_bytes())
    blob[-3] ^= 0xFF
    tensors.write_bytes(bytes(blob))
    with pytest.raises(ck.CheckpointError, match="truncated or corrupted"):
        ck.load_checkpoint(tmp_path / "c", {"s": state})
    doc = json.loads((tmp_path / "c" / ck.META_FILE).read_text())
    doc["format_version"] = ck.FORMAT_VERSION + 1
    (tmp_path / "c" / ck.META_FILE).write_text(json.dumps(doc))
    with pytest.raises(ck.CheckpointError, match="newer than this jaxreg"):
        ck.load_checkpoint(tmp_path / "c", {"s": state})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("mine")
    with pytest.raises(ck.CheckpointError, match="not empty and holds no checkpoint"):
        ck.save_checkpoint(tmp_path / "junk", {"s": state})
    with pytest.raises(ck.CheckpointError, match="holds no checkpoint; refusing to touch it"):
        ck.clear_checkpoint(tmp_path / "junk")


class _Kill(Exception):
    pass


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path, data):
    keys = list(jax.random.split(jax.random.PRNGKey(0), 2))
    hp = Hparams(0.5)
    full, _ = _resumable(data, hp, keys, 2)
    # The members train together and stop early (patience 4) at different epochs; cut the
    # run at epoch 10, after one member has stopped and before the other.
    stops = sorted(int(e) for e in full.epochs_run)
    assert stops[0] <= 10 < stops[1] < CFG.epochs
    seen = []

    def kill(progress):
        seen.append(progress.epoch)
        assert progress.state.epoch.shape == (2,) and progress.history.epoch.shape[0] == 2
        if progress.epoch == 10:
            raise _Kill

    fp = {"run": 1}
    with pytest.raises(_Kill):
        _resumable(data, hp, keys, 2, tmp_path / "c", every=4, fingerprint=fp, callback=kill)
    assert seen == [2, 4, 6, 8, 10]
    meta = ck.read_checkpoint_meta(tmp_path / "c")["meta"]
    assert (meta["n_members"], meta["epoch"]) == (2, 8)  # every 4 epochs
    with pytest.raises(ck.CheckpointError, match="different run .*differs in: run"):
        _resumable(data, hp, keys, 2, tmp_path / "c", every=4, resume=True, fingerprint={"run": 2})
    with pytest.raises(ck.CheckpointError, match="inconsistent: 2 member"):
        _resumable(data, hp, keys[:1], 2, tmp_path / "c", every=4, resume=True, fingerprint=fp)
    again, checkpointer = _resumable(
        data, hp, keys, 2, tmp_path / "c", every=4, resume=True, fingerprint=fp
    )
    assert checkpointer.resumed_from == 8
    _equal(full, jax.tree.map(np.asarray, again))


def test_one_member_resumes_too_and_old_checkpoints_are_refused(tmp_path, data):
    key = [jax.random.PRNGKey(5)]
    hp = Hparams(0.1)
    full, _ = _resumable(data, hp, key, 4)
    assert full.epochs_run.shape == (1,)

    def kill(progress):
        if progress.epoch == 8:
            raise _Kill

    with pytest.raises(_Kill):
        _resumable(data, hp, key, 4, tmp_path / "c", every=4, callback=kill)
    again, checkpointer = _resumable(data, hp, key, 4, tmp_path / "c", every=4, resume=True)
    assert checkpointer.resumed_from == 8
    _equal(full, jax.tree.map(np.asarray, again))
    doc = json.loads((tmp_path / "c" / ck.META_FILE).read_text())
    doc["format_version"] = 1
    (tmp_path / "c" / ck.META_FILE).write_text(json.dumps(doc))
    with pytest.raises(ck.CheckpointError, match="older jaxreg .*format version 1"):
        _resumable(data, hp, key, 4, tmp_path / "c", every=4, resume=True)
