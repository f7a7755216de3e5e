import jax
import numpy as np
import pytest

from jaxreg.data import Dataset, lecture_data
from jaxreg.engine import TrainConfig, make_train
from jaxreg.errors import TrainingDivergedError
from jaxreg.model import MLPSpec, apply, init
from jaxreg.optim import Hparams
from jaxreg.runner import Placement, compile_count, fit, fit_many, run

KEY = jax.random.PRNGKey(1234)


@pytest.fixture(scope="module")
def lecture():
    return Dataset(*lecture_data())


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (60, 2)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:] ** 2).astype(np.float32)
    return Dataset(x[:45], y[:45], x[45:], y[45:])


@pytest.mark.parametrize(
    "optimizer, train_mse, val_mse",
    [("gd", 0.039963, 0.042119), ("sgd", 0.039963, 0.042119), ("adam", 0.035879, 0.040869)],
)
def test_the_lectures_figures_are_reproduced(lecture, optimizer, train_mse, val_mse):
    res = fit(
        MLPSpec(), TrainConfig(4000, optimizer, record_every=0), lecture, Hparams(1e-3), key=KEY
    )
    assert f"{float(res.train_mse[0]):.6f}" == f"{train_mse:.6f}"
    assert f"{float(res.val_mse[0]):.6f}" == f"{val_mse:.6f}"


def test_gd_and_optax_sgd_agree_exactly(small):
    a = fit(MLPSpec((2, 8, 1)), TrainConfig(50, "gd", record_every=0), small, Hparams(1e-2))
    b = fit(MLPSpec((2, 8, 1)), TrainConfig(50, "sgd", record_every=0), small, Hparams(1e-2))
    for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(p, q)


def test_one_epoch_of_gd_is_one_manual_update(small):
    spec = MLPSpec((2, 5, 1))
    res = fit(spec, TrainConfig(1, "gd", record_every=1), small, Hparams(0.05), key=KEY)
    p0 = init(KEY, spec)

    def loss(p):
        return ((apply(p, small.x) - small.y) ** 2).mean()

    g = jax.grad(loss)(p0)
    manual = jax.tree.map(lambda p, g: p - 0.05 * g, p0, g)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(manual), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the recorded loss is the loss before the epoch's update
    np.testing.assert_allclose(res.history.train_mse[0, 0], loss(p0), rtol=1e-5)
    np.testing.assert_allclose(
        res.history.val_mse[0, 0], ((apply(p0, small.x_val) - small.y_val) ** 2).mean(), rtol=1e-5
    )


def test_shuffle_with_one_full_batch_equals_full_batch(small):
    spec = MLPSpec((2, 6, 1))
    full = fit(spec, TrainConfig(30, "adam", record_every=0), small, Hparams(1e-2))
    shuf = fit(
        spec,
        TrainConfig(30, "adam", batch_size=45, sampling="shuffle", record_every=0),
        small,
        Hparams(1e-2),
    )
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(shuf.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_integer_sample_weights_equal_repeated_rows(small):
    spec = MLPSpec((2, 6, 1))
    w = np.arange(45) % 3 + 1.0
    weighted = fit(
        spec,
        TrainConfig(20, "gd", record_every=0),
        small._replace(w=w.astype(np.float32)),
        Hparams(0.05),
    )
    rep = np.repeat(np.arange(45), w.astype(int))
    repeated = fit(
        spec,
        TrainConfig(20, "gd", record_every=0),
        small._replace(x=small.x[rep], y=small.y[rep]),
        Hparams(0.05),
    )
    for a, b in zip(
        jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bootstrap_is_seeded_and_partial_batches_work(small):
    cfg = TrainConfig(5, "adam", batch_size=10, sampling="bootstrap", record_every=1)
    a = fit(MLPSpec((2, 4, 1)), cfg, small, Hparams(1e-2), key=1)
    b = fit(MLPSpec((2, 4, 1)), cfg, small, Hparams(1e-2), key=1)
    c = fit(MLPSpec((2, 4, 1)), cfg, small, Hparams(1e-2), key=2)
    np.testing.assert_array_equal(a.history.objective, b.history.objective)
    assert not np.array_equal(a.history.objective, c.history.objective)
    shuf = fit(
        MLPSpec((2, 4, 1)),
        TrainConfig(5, "adam", batch_size=16, sampling="shuffle"),
        small,
        Hparams(1e-2),
    )
    assert np.all(np.isfinite(shuf.history.objective))


def test_early_stopping_restores_the_best_epoch(small):
    # Validation targets that are pure noise: fitting the training rows soon makes the
    # validation MSE worse, so patience runs out and the best epoch must be restored.
    noise = np.random.default_rng(1).normal(size=small.y_val.shape).astype(np.float32)
    data = small._replace(y_val=noise)
    cfg = TrainConfig(400, "adam", record_every=5, patience=25)
    res = fit(MLPSpec((2, 32, 1)), cfg, data, Hparams(0.05), key=3)
    assert int(res.epochs_run) < 400  # it did stop
    val = np.asarray(res.history.val_mse)[:, 0]
    recorded = np.asarray(res.history.epoch)
    best = int(np.nanargmin(val))
    assert int(res.best_epoch) == int(recorded[best])
    assert int(res.epochs_run) >= int(res.best_epoch) + 25
    np.testing.assert_allclose(res.val_mse[0], val[best], rtol=1e-5)
    np.testing.assert_allclose(
        res.val_mse[0], ((apply(res.best_params, data.x_val) - data.y_val) ** 2).mean(), rtol=1e-5
    )
    assert not np.array_equal(res.best_params[0].W, res.params[0].W)


def test_chunked_run_and_resume_equal_one_run(small):
    cfg = TrainConfig(60, "adam", batch_size=16, sampling="shuffle", record_every=5)
    one = fit(MLPSpec((2, 8, 1)), cfg, small, Hparams(1e-2), key=4)
    seen = []
    chunked = fit(
        MLPSpec((2, 8, 1)), cfg, small, Hparams(1e-2), key=4, chunk_epochs=20, callback=seen.append
    )
    assert [p.epoch for p in seen] == [20, 40, 60]
    resumed = fit(
        MLPSpec((2, 8, 1)),
        cfg,
        small,
        Hparams(1e-2),
        key=4,
        chunk_epochs=20,
        resume=(seen[0].state, seen[0].history),
    )
    for a, b, c in zip(
        jax.tree.leaves(one.params),
        jax.tree.leaves(chunked.params),
        jax.tree.leaves(resumed.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)
    np.testing.assert_array_equal(chunked.history.epoch, np.arange(0, 60, 5))
    np.testing.assert_array_equal(resumed.history.val_mse, chunked.history.val_mse)


def test_changing_learning_rate_or_l2_does_not_recompile(small):
    cfg = TrainConfig(7, "adam", record_every=0)
    fit(MLPSpec((2, 3, 1)), cfg, small, Hparams(1e-2))
    before = compile_count()
    fit(MLPSpec((2, 3, 1)), cfg, small, Hparams(3e-2, l2=1e-3))
    assert compile_count() == before
    fit(MLPSpec((2, 3, 1)), TrainConfig(8, "adam", record_every=0), small, Hparams(1e-2))
    assert compile_count() == before + 1


def test_fit_many_equals_models_trained_alone(small):
    cfg = TrainConfig(20, "adam", record_every=0)
    many = fit_many(
        MLPSpec((2, 4, 1)),
        cfg,
        small,
        Hparams(learning_rate=np.array([1e-2, 3e-2, 1e-2])),
        keys=[0, 0, 5],
    )
    for i, (lr, seed) in enumerate([(1e-2, 0), (3e-2, 0), (1e-2, 5)]):
        alone = fit(MLPSpec((2, 4, 1)), cfg, small, Hparams(lr), key=seed)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(many.params), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        dict(threads=1, batching="vmap"),
        dict(threads=2),
        dict(threads=1, batching="map"),
        dict(threads=3, batching="map"),
    ],
)
def test_fit_many_layouts_train_the_same_models(small, kw):
    # Threads cut the model axis into parts (padding 5 models to 6 for 2 or 3 parts); "map"
    # loops over models instead of batching them. Each must give every model's own result.
    cfg = TrainConfig(12, "adam", record_every=4)
    lrs = np.array([1e-2, 3e-2, 1e-2, 2e-2, 5e-3])
    ref = fit_many(
        MLPSpec((2, 4, 1)),
        cfg,
        small,
        Hparams(learning_rate=lrs),
        keys=[0, 1, 2, 3, 4],
        threads=1,
        batching="vmap",
    )
    got = fit_many(
        MLPSpec((2, 4, 1)), cfg, small, Hparams(learning_rate=lrs), keys=[0, 1, 2, 3, 4], **kw
    )
    assert got.val_mse.shape == (5, 1)
    for a, b in zip(
        jax.tree.leaves(ref.params) + [ref.history.val_mse],
        jax.tree.leaves(got.params) + [got.history.val_mse],
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_many_in_chunks_equals_one_call_with_early_stopping_and_warm_params(small):
    # Members stop early at different epochs; a chunked run (all members advancing
    # together) and a resumed one end exactly where the single call does.
    cfg = TrainConfig(40, "adam", batch_size=16, sampling="shuffle", patience=3)
    hp = Hparams(learning_rate=np.array([3e-2, 1e-1, 2e-2]))
    one = fit_many(MLPSpec((2, 6, 1)), cfg, small, hp, keys=[1, 2, 3], threads=1)
    assert len(set(np.asarray(one.epochs_run).tolist())) > 1  # they stop at different epochs
    seen = []
    chunked = fit_many(
        MLPSpec((2, 6, 1)), cfg, small, hp, keys=[1, 2, 3], chunk_epochs=4, callback=seen.append
    )
    assert [p.epoch for p in seen] == list(range(4, 4 * len(seen) + 1, 4))
    assert seen[-1].history.epoch.shape == (3, 4 * len(seen))
    for a, b in zip(
        jax.tree.leaves(one.params) + [one.best_epoch, one.epochs_run],
        jax.tree.leaves(chunked.params) + [chunked.best_epoch, chunked.epochs_run],
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    cut = seen[1]
    resumed = fit_many(
        MLPSpec((2, 6, 1)),
        cfg,
        small,
        hp,
        keys=[1, 2, 3],
        chunk_epochs=4,
        resume=(cut.state, cut.history),
    )
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # Warm start: given parameters replace the initialization.
    warm = fit_many(
        MLPSpec((2, 6, 1)),
        TrainConfig(5, "sgd", record_every=0),
        small,
        Hparams(1e-2),
        keys=[0, 0, 0],
        params=one.params,
        threads=1,
    )
    alone = fit(
        MLPSpec((2, 6, 1)),
        TrainConfig(5, "sgd", record_every=0),
        small,
        Hparams(1e-2),
        key=0,
        params=jax.tree.map(lambda a: a[1], one.params),
    )
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(warm.params), strict=True):
        np.testing.assert_allclose(a, b[1], rtol=1e-6, atol=1e-7)


def test_fit_many_rejects_bad_layout_options(small):
    with pytest.raises(
        ValueError,
        match=r"The 'batching' parameter of placement_for must be "
        r"a str among \{'map', 'vmap'\} or None\. Got 'pmap' instead\.",
    ):
        fit_many(MLPSpec((2, 3, 1)), TrainConfig(2), small, keys=[0], batching="pmap")
    with pytest.raises(
        ValueError,
        match=r"The 'threads' parameter of placement_for must be an "
        r"int in \[1, inf\) or None\. Got 0 instead\.",
    ):
        fit_many(MLPSpec((2, 3, 1)), TrainConfig(2), small, keys=[0], threads=0)


def test_fit_many_needs_models(small):
    with pytest.raises(
        ValueError,
        match=r"^The 'n_models' parameter of fit_many must be an int "
        r"in \[1, inf\) when keys is None\. Got None instead\.$",
    ):
        fit_many(MLPSpec((2, 3, 1)), TrainConfig(2), small)
    with pytest.raises(
        ValueError,
        match=r"'keys' parameter of fit_many must be None, a "
        r"non-empty list .* Got \[\] instead\.$",
    ):
        fit_many(MLPSpec((2, 3, 1)), TrainConfig(2), small, keys=[])


def test_make_train_is_pure_and_jittable(small):
    train = jax.jit(make_train(MLPSpec((2, 3, 1)), TrainConfig(5, "sgd")))
    a = train(KEY, small, Hparams(1e-2))
    b = train(KEY, small, Hparams(1e-2))
    np.testing.assert_array_equal(a.val_mse, b.val_mse)


def test_divergence_raises_with_a_hint(small):
    with pytest.raises(
        TrainingDivergedError,
        match=r"diverged.*at epoch \d+.*Lower the "
        "learning rate",
    ):
        fit(
            MLPSpec((2, 8, 1)),
            TrainConfig(200, "sgd", record_every=1),
            small._replace(x=small.x * 1e3),
            Hparams(10.0),
        )


def test_divergence_in_fit_many_names_the_model(small):
    with pytest.raises(
        TrainingDivergedError,
        match=r"diverged in model 1 of 3: .* at epoch "
        r"\d+ \(learning_rate=10\)",
    ):
        fit_many(
            MLPSpec((2, 8, 1)),
            TrainConfig(200, "sgd", record_every=1),
            small._replace(x=small.x * 1e3),
            Hparams(learning_rate=np.array([1e-9, 10.0, 1e-9])),
            keys=[0, 1, 2],
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(epochs=0),
            r"^The 'epochs' parameter of TrainConfig must be an int in \[1, inf\)\. "
            r"Got 0 instead\.$",
        ),
        (
            dict(optimizer="adamax"),
            "'optimizer' parameter of TrainConfig must be a str among .* Got 'adamax'",
        ),
        (
            dict(schedule="step"),
            "'schedule' parameter of TrainConfig must be a str among .* Got 'step'",
        ),
        (
            dict(sampling="random"),
            r"'sampling' parameter of TrainConfig must be a str among "
            r"\{'bootstrap', 'full', 'shuffle'\}\. Got 'random'",
        ),
        (
            dict(batch_size=10),
            "'batch_size' parameter of TrainConfig must be None when "
            "sampling='full' .* Got 10 instead",
        ),
        (
            dict(sampling="shuffle"),
            r"'batch_size' parameter of TrainConfig must be an int in "
            r"\[1, inf\)\. Got None instead",
        ),
        (
            dict(epochs=10, record_every=3),
            "'record_every' parameter of TrainConfig must be 0 or a "
            "divisor of epochs=10. Got 3 instead",
        ),
        (
            dict(patience=5, record_every=0),
            "'patience' parameter of TrainConfig must be None when record_every=0 .* Got 5 instead",
        ),
        (
            dict(steps_per_epoch=3),
            "'steps_per_epoch' parameter of TrainConfig must be None unless "
            "sampling='bootstrap' .* Got 3 instead",
        ),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bootstrap_batch_larger_than_data(small):
    with pytest.raises(
        ValueError,
        match=r"'batch_size' parameter of TrainConfig must be at "
        r"most the number of training rows \(45\) .* Got 100 instead",
    ):
        fit(MLPSpec((2, 3, 1)), TrainConfig(2, batch_size=100, sampling="bootstrap"), small)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(chunk_epochs=3),
            r"^The 'chunk_epochs' parameter of run must be a positive multiple "
            r"of record_every \(2\) that divides epochs \(4\)\. Got 3 instead\.$",
        ),
        (dict(chunk_epochs=True), r"'chunk_epochs' parameter of run .* Got True instead"),
        (
            dict(chunk_epochs=2, n_epochs=3),
            r"^The 'n_epochs' parameter of run must be None or a "
            r"positive multiple of chunk_epochs \(2\)\. Got 3 instead\.$",
        ),
        (
            dict(callbacks=(print,)),
            r"^The 'chunk_epochs' parameter of run must be an int when resume, "
            r"n_epochs or callbacks are given\. Got None instead\.$",
        ),
    ],
)
def test_chunk_options_are_checked(small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run(
            MLPSpec((2, 3, 1)),
            TrainConfig(4, record_every=2),
            small,
            Hparams(),
            KEY[None],
            **kwargs,
        )


def test_chunks_need_record_points(small):
    with pytest.raises(
        ValueError,
        match=r"'chunk_epochs' parameter of run must be None when "
        r"cfg.record_every=0 .* Got 2 instead",
    ):
        fit(MLPSpec((2, 3, 1)), TrainConfig(4, record_every=0), small, chunk_epochs=2)


def test_placement_names_the_bad_field():
    with pytest.raises(
        ValueError,
        match=r"^The 'batching' parameter of Placement must be a str "
        r"among \{'map', 'single', 'vmap'\}\. Got 'pmap' instead\.$",
    ):
        Placement("pmap")
    with pytest.raises(
        ValueError,
        match=r"^The 'parts' parameter of Placement must be 1 when "
        r"batching='single' .* Got 2 instead\.$",
    ):
        Placement("single", parts=2)


@pytest.mark.long
def test_fit_many_splits_the_model_axis_over_devices():
    # Two CPU devices need a fresh process (the device count is fixed when JAX starts).
    import os
    import subprocess
    import sys

    code = """
import jax, numpy as np
from jaxreg.data import Dataset
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams
from jaxreg.engine import TrainConfig
from jaxreg.runner import fit_many
assert len(jax.devices()) == 2
rng = np.random.default_rng(0)
x = rng.normal(size=(30, 1)).astype(np.float32)
d = Dataset(x, np.sin(x), x[:10], np.sin(x[:10]))
cfg = TrainConfig(15, "adam", record_every=5)
one = fit_many(MLPSpec((1, 4, 1)), cfg, d, Hparams(1e-2), keys=[0, 1, 2],
               devices=jax.devices()[:1])
two = fit_many(MLPSpec((1, 4, 1)), cfg, d, Hparams(1e-2), keys=[0, 1, 2])
loop = fit_many(MLPSpec((1, 4, 1)), cfg, d, Hparams(1e-2), keys=[0, 1, 2], batching="map")
seen = []
chunks = fit_many(MLPSpec((1, 4, 1)), cfg, d, Hparams(1e-2), keys=[0, 1, 2], chunk_epochs=5,
                  callback=lambda p: seen.append((p.epoch, p.state.epoch.shape)))
assert seen == [(5, (3,)), (10, (3,)), (15, (3,))], seen
assert two.val_mse.shape == (3, 1)
for other in (two, loop, chunks):
    np.testing.assert_allclose(one.val_mse, other.val_mse, rtol=1e-6)
    np.testing.assert_allclose(one.params[0].W, other.params[0].W, rtol=1e-6)
print("OK")
"""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("OK")
