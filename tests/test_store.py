"""jaxreg.store: save/load round trip and every refusal of load_model (NumPy only, fast)."""

import json

import numpy as np
import pytest

from jaxreg.data import Standardizer
from jaxreg.model import Layer, MLPSpec
from jaxreg.store import FORMAT_VERSION, META_FILE, load_model, save_model

SPEC = MLPSpec((2, 3, 1), init="glorot_uniform", bias_init="zeros", key_scheme="split")


def _params(m=2, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return tuple(
        Layer(rng.normal(size=(m, a, b)).astype(dtype), rng.normal(size=(m, 1, b)).astype(dtype))
        for a, b in zip(SPEC.layer_sizes[:-1], SPEC.layer_sizes[1:], strict=True)
    )


def _save(path, params=None, **kw):
    xs = Standardizer(np.array([0.1, -2.0]), np.array([1.5, 3.0]))
    ys = Standardizer(np.array([7.25]), np.array([0.3]))
    return save_model(
        path,
        SPEC,
        _params() if params is None else params,
        xs,
        ys,
        config={"epochs": 10},
        feature_names=["a", "b"],
        target_names=["t"],
        metadata={"loss_curve": [1.0, 0.5]},
        **kw,
    )


def _weights(path):
    return path / json.loads((path / META_FILE).read_text())["files"]["weights"]


def test_round_trip_is_exact(tmp_path):
    params = _params()
    _save(tmp_path / "m", params)
    saved = load_model(tmp_path / "m")
    assert saved.spec == SPEC and saved.n_ensemble == 2
    for a, b in zip(saved.params, params, strict=True):
        assert a.W.dtype == np.float32
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.b, b.b)
    np.testing.assert_array_equal(saved.x_scaler.mean, [0.1, -2.0])
    np.testing.assert_array_equal(saved.y_scaler.scale, [0.3])
    assert saved.feature_names == ["a", "b"] and saved.target_names == ["t"]
    assert saved.config == {"epochs": 10} and saved.metadata["loss_curve"] == [1.0, 0.5]
    assert saved.format_version == FORMAT_VERSION


def test_single_model_params_are_saved_with_one_member(tmp_path):
    one = tuple(Layer(p.W[0], p.b[0]) for p in _params())
    _save(tmp_path / "m", one)
    saved = load_model(tmp_path / "m")
    assert saved.n_ensemble == 1 and saved.params[0].W.shape == (1, 2, 3)


def test_overwrite_replaces_a_model_and_leaves_no_temporaries(tmp_path):
    _save(tmp_path / "m", _params(seed=0))
    _save(tmp_path / "m", _params(seed=1))
    np.testing.assert_array_equal(load_model(tmp_path / "m").params[0].W, _params(seed=1)[0].W)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_refuses_to_overwrite_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a jaxreg model; refusing"):
        _save(tmp_path / "m")
    assert (tmp_path / "m" / "notes.txt").read_text() == "keep me"


def test_refuses_to_save_non_finite_weights(tmp_path):
    params = _params()
    params[0].W[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _save(tmp_path / "m", params)
    assert not (tmp_path / "m").exists()


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_a_file_or_empty_folder_is_not_a_model(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="Model folder .*f.txt' is a file, not a folder"):
        load_model(tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a jaxreg model"):
        load_model(tmp_path / "empty")


def test_missing_files(tmp_path):
    _save(tmp_path / "m")
    _weights(tmp_path / "m").unlink()
    with pytest.raises(FileNotFoundError, match="weights"):
        load_model(tmp_path / "m")
    _save(tmp_path / "n")
    (tmp_path / "n" / META_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=META_FILE):
        load_model(tmp_path / "n")


def _edit_meta(path, **changes):
    meta = json.loads((path / META_FILE).read_text())
    meta.update(changes)
    (path / META_FILE).write_text(json.dumps(meta))


def test_foreign_json_and_broken_json(tmp_path):
    _save(tmp_path / "m")
    _edit_meta(tmp_path / "m", format="something-else")
    with pytest.raises(ValueError, match="not a jaxreg model"):
        load_model(tmp_path / "m")
    _save(tmp_path / "n")
    (tmp_path / "n" / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path / "n")


def test_newer_format_version(tmp_path):
    _save(tmp_path / "m")
    _edit_meta(tmp_path / "m", format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}, newer"):
        load_model(tmp_path / "m")


def test_truncated_weights(tmp_path):
    _save(tmp_path / "m")
    w = _weights(tmp_path / "m")
    w.write_bytes(w.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_model(tmp_path / "m")


def test_corrupted_weight_bytes(tmp_path):
    _save(tmp_path / "m")
    w = _weights(tmp_path / "m")
    blob = bytearray(w.read_bytes())
    blob[-3] ^= 0xFF  # inside the tensor data: safetensors alone would not notice
    w.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_model(tmp_path / "m")


def _rewrite_weights(path, tensors):
    import hashlib

    from safetensors.numpy import save

    from jaxreg.files import checksum

    # A consistent rewrite (weights, their SHA-256 and the checksum), to reach the checks
    # behind the checksum.
    blob = save(tensors)
    _weights(path).write_bytes(blob)
    meta = json.loads((path / META_FILE).read_text())
    meta["model"]["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    meta["checksum"] = checksum(meta["model"])
    (path / META_FILE).write_text(json.dumps(meta))


def test_shapes_that_disagree_with_the_spec(tmp_path):
    _save(tmp_path / "m")
    p = _params()
    tensors = {
        "layers.0.W": p[0].W[:, :, :2].copy(),
        "layers.0.b": p[0].b,
        "layers.1.W": p[1].W,
        "layers.1.b": p[1].b,
    }
    _rewrite_weights(tmp_path / "m", tensors)
    with pytest.raises(ValueError, match=r"layers\.0\.W has shape \(2, 2, 2\)"):
        load_model(tmp_path / "m")


def test_missing_tensor(tmp_path):
    _save(tmp_path / "m")
    p = _params()
    _rewrite_weights(tmp_path / "m", {"layers.0.W": p[0].W, "layers.0.b": p[0].b})
    with pytest.raises(ValueError, match="disagrees with the spec"):
        load_model(tmp_path / "m")


def test_non_finite_weights(tmp_path):
    _save(tmp_path / "m")
    p = _params()
    bad = p[1].b.copy()
    bad[0, 0, 0] = np.inf
    _rewrite_weights(
        tmp_path / "m",
        {"layers.0.W": p[0].W, "layers.0.b": p[0].b, "layers.1.W": p[1].W, "layers.1.b": bad},
    )
    with pytest.raises(ValueError, match=r"layers\.1\.b holds NaN or infinite"):
        load_model(tmp_path / "m")
