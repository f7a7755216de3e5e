"""TablePreprocessor: text categories and missing values, against a hand-built NumPy/pandas
reference; stored as plain data and rebuilt identically; every refusal one line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from jaxreg.preprocess import TablePreprocessor, UnknownCategoryWarning

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _table(n=40, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "size": rng.normal(10, 3, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "smoker": rng.choice(["yes", "no"], n),
            "code": rng.choice([3, 7, 11], n),
            "flag": rng.random(n) > 0.5,
        }
    )
    df.loc[::5, "size"] = np.nan
    df.loc[3, "colour"] = np.nan
    return df


def _reference(fit, new, categorical, indicator):
    """The expected features, built by hand: medians of the fit rows, one column per
    category in sorted order (missing last), one column for the last of two categories."""
    cols = []
    numeric = [c for c in fit.columns if c not in categorical]
    for c in numeric:
        v = new[c].astype(float).to_numpy()
        cols.append(np.where(np.isnan(v), np.nanmedian(fit[c].astype(float)), v))
    if indicator:
        cols += [new[c].isna().to_numpy(float) for c in numeric if fit[c].isna().any()]
    for c in categorical:
        as_text = lambda s: s.map(lambda v: v if pd.isna(v) else str(v))  # noqa: E731
        seen = as_text(fit[c])
        cats = sorted(seen.dropna().unique()) + ([np.nan] if seen.isna().any() else [])
        values = as_text(new[c])
        onehot = [
            (values.isna() if isinstance(k, float) else values == k).to_numpy(float) for k in cats
        ]
        cols += onehot[1:] if len(cats) == 2 else onehot
    return np.column_stack(cols)


@pytest.mark.parametrize("indicator", [False, True])
def test_features_equal_a_hand_built_reference(indicator):
    df = _table()
    prep = TablePreprocessor(categorical=["code"], missing_indicator=indicator).fit(df)
    assert prep.numeric_ == ["size", "flag"] and prep.categorical_ == ["colour", "smoker", "code"]
    got = prep.transform(df)
    want = _reference(df, df, ["colour", "smoker", "code"], indicator)
    np.testing.assert_array_equal(got.to_numpy(), want)
    names = list(got.columns)
    assert names[:2] == ["size", "flag"]
    assert ("missingindicator_size" in names) == indicator
    assert "smoker_yes" in names and "smoker_no" not in names  # yes/no -> one 0/1 column
    assert "colour_nan" in names  # a missing value seen in fit is a category of its own


def test_stored_as_plain_json_and_rebuilt_identically():
    df = _table()
    prep = TablePreprocessor(categorical=["code"], missing_indicator=True).fit(df)
    text = json.dumps(prep.to_dict(), allow_nan=False)  # JSON only: no pickle, no NaN
    again = TablePreprocessor.from_dict(json.loads(text))
    new = _table(25, seed=1)[["flag", "code", "smoker", "size", "colour"]]  # reordered
    new["extra"] = 1.0  # columns the model does not use are ignored
    a, b = prep.transform(new), again.transform(new)
    pd.testing.assert_frame_equal(a, b)
    assert again.to_dict() == prep.to_dict()
    assert list(again.get_feature_names_out()) == list(prep.get_feature_names_out())


def test_unseen_categories_are_zeros_with_one_warning_per_column():
    df = _table()
    prep = TablePreprocessor().fit(df.dropna(subset=["colour"]))
    new = df.iloc[:4].copy()
    new["colour"] = ["purple", "red", "purple", np.nan]  # nan unseen in fit too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = prep.transform(new)
    msgs = [str(w.message) for w in caught if w.category is UnknownCategoryWarning]
    assert len(msgs) == 1 and "\n" not in msgs[0]
    assert "'colour'" in msgs[0] and "'purple'" in msgs[0] and "<missing>" in msgs[0]
    assert "3 row(s)" in msgs[0]
    colour = [c for c in out.columns if c.startswith("colour_")]
    assert out.loc[:, colour].iloc[[0, 2, 3]].to_numpy().sum() == 0
    assert out.loc[:, "colour_red"].iloc[1] == 1


@pytest.mark.parametrize(
    "frame, params, pieces",
    [
        (
            pd.DataFrame({"id": [f"r{i}" for i in range(30)], "a": range(30)}),
            {"max_categories": 20},
            ["'id'", "30 distinct text values", "max_categories 20", "identifier"],
        ),
        (
            pd.DataFrame({"a": ["1", "2", "x3", "4"]}),
            {},
            ["'a'", "mixes numbers and text", "'x3'", "row 3", "categorical"],
        ),
        (
            pd.DataFrame({"a": ["1", "b", "c"]}),
            {"numeric": ["a"]},
            ["'a'", "declared numeric", "'b'", "row 2"],
        ),
        (pd.DataFrame({"a": [1.0, 2.0]}), {"categorical": ["z"]}, ["categorical", "['z']"]),
        (
            pd.DataFrame({"a": [1.0, 2.0]}),
            {"categorical": ["a"], "numeric": ["a"]},
            ["both categorical and numeric", "['a']"],
        ),
        (pd.DataFrame({"a": [np.nan, np.nan], "b": [1, 2]}), {}, ["'a'", "every one of its 2"]),
        (pd.DataFrame({"a": [1.0, np.inf]}), {}, ["'a'", "infinite", "row 2"]),
        (pd.DataFrame({"a": [1.0]}), {"max_categories": 0}, ["max_categories", "Got 0"]),
    ],
    ids=["identifier", "typo", "declared", "unknown", "both", "empty", "inf", "bad param"],
)
def test_refusals_are_one_line_naming_the_column(frame, params, pieces):
    with pytest.raises(ValueError) as info:
        TablePreprocessor(**params).fit(frame)
    msg = str(info.value)
    assert "\n" not in msg
    for piece in pieces:
        assert piece in msg, (piece, msg)


def test_declared_categorical_codes_match_across_int_and_float_columns():
    """A code column read with a missing value becomes float (3.0): still category '3'."""
    prep = TablePreprocessor(categorical=["code"]).fit(pd.DataFrame({"code": [3, 7, 11]}))
    with pytest.warns(UnknownCategoryWarning, match="<missing>"):
        out = prep.transform(pd.DataFrame({"code": [3.0, 11.0, np.nan]}))
    assert list(out.columns) == ["code_11", "code_3", "code_7"]
    np.testing.assert_array_equal(out.to_numpy()[:2], [[0, 1, 0], [1, 0, 0]])


def test_a_missing_column_at_transform_is_named():
    prep = TablePreprocessor().fit(_table())
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['smoker'\]"):
        prep.transform(_table().drop(columns="smoker"))


def test_pipeline_saves_and_loads_predicting_from_a_raw_frame(tmp_path):
    from sklearn.pipeline import Pipeline, make_pipeline

    import jaxreg

    df = _table(120)
    y = np.nan_to_num(df["size"]) + (df["colour"] == "red") * 3.0 + (df["smoker"] == "yes")
    model = make_pipeline(
        jaxreg.TablePreprocessor(missing_indicator=True),
        jaxreg.MLPRegressor(hidden_layer_sizes=(8,), epochs=20, random_state=0),
    )
    model.fit(df, y)
    jaxreg.save(model, tmp_path / "m")
    loaded = jaxreg.load(tmp_path / "m")
    assert isinstance(loaded, Pipeline)
    new = _table(30, seed=5)[list(reversed(df.columns))]
    np.testing.assert_array_equal(loaded.predict(new), model.predict(new))
    mean, std = loaded.predict(new, return_std=True)
    assert mean.shape == std.shape == (30,)
    assert list(loaded[-1].feature_names_in_) == list(model[0].get_feature_names_out())
    # the preprocessing is part of what the checksum covers: an edit is refused
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["model"]["preprocessing"]["medians"][0] += 1.0
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="checksum"):
        jaxreg.load(tmp_path / "m")


def test_save_refuses_other_pipelines(tmp_path):
    """Refused by kind, before anything is fitted or written."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import jaxreg

    model = make_pipeline(StandardScaler(), jaxreg.MLPRegressor(epochs=2))
    with pytest.raises(ValueError, match="TablePreprocessor and an MLPRegressor"):
        jaxreg.save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_true_false_text_is_a_category_and_numbers_stored_as_text_are_numbers():
    import io

    # pandas reads True/False with a blank as objects: booleans, not numbers
    df = pd.read_csv(io.StringIO("a,b\nTrue,1\nFalse,2\n,3\nTrue,4\n"))
    prep = TablePreprocessor().fit(df)
    assert list(prep.get_feature_names_out()) == ["b", "a_false", "a_true", "a_nan"]
    np.testing.assert_array_equal(prep.transform(df)["a_true"], [1, 0, 0, 1])
    # every value reads as a number: a numeric column, missing values imputed
    text = pd.DataFrame({"s": ["1", "2", "3.5", None]})
    prep = TablePreprocessor().fit(text)
    assert prep.numeric_ == ["s"]
    np.testing.assert_array_equal(prep.transform(text)["s"], [1, 2, 3.5, 2])


def test_numbers_alone_equal_scikit_learns_median_imputer_and_leave_the_input_alone():
    """A table of numbers only equals ``SimpleImputer(strategy="median")`` and the
    transform never writes into the caller's frame."""
    from sklearn.impute import SimpleImputer

    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 3))
    a[rng.random(a.shape) < 0.1] = np.nan
    frame = pd.DataFrame(a, columns=["p", "q", "r"])
    frame["i"] = rng.integers(0, 5, 300)  # an int column beside the floats
    kept = frame.copy()
    prep = TablePreprocessor().fit(frame)
    got = prep.transform(frame)
    ref = SimpleImputer(strategy="median").fit(frame).transform(frame)
    np.testing.assert_array_equal(got.to_numpy(), ref)
    assert list(got.columns) == ["p", "q", "r", "i"] and got.index.equals(frame.index)
    pd.testing.assert_frame_equal(frame, kept)
    assert not np.isnan(got.to_numpy()).any()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"missing_indicator": True},
        {"categorical": ["i"]},
        {"categorical": ["i"], "missing_indicator": True},
    ],
)
def test_the_direct_path_equals_the_column_transformer(params):
    """``transform`` computes the fitted ColumnTransformer's output itself: the values,
    names and order equal its own, on the fit rows and on new rows with values missing
    where the fit rows had none and categories fit never saw (all zeros, one warning)."""
    from jaxreg.preprocess import _prepared

    rng = np.random.default_rng(3)
    n = 200
    frame = pd.DataFrame(
        {
            "b": rng.random(n) > 0.3,
            "a": rng.normal(size=n),
            "t": [str(v) if i % 7 else None for i, v in enumerate(rng.integers(0, 9, n))],
            "i": rng.integers(-5, 5, n),
            "c": rng.choice(["red", "green", "blue"], n),
            "s": rng.choice(["yes", "no"], n),  # two categories: one 0/1 column
        }
    )
    frame.loc[::4, "a"] = np.nan
    frame.loc[5::9, "c"] = None  # a missing value: a category of its own
    new = frame.sample(frac=1.0, random_state=0).copy()
    new["i"] = new["i"].astype(float)
    new.loc[new.index[:30], "i"] = np.nan  # no missing "i" at fit
    new.loc[new.index[30:33], "c"] = "mauve"  # unseen
    new = new[["i", "t", "c", "a", "s", "b"]]  # the columns in another order
    prep = TablePreprocessor(**params).fit(frame)
    cols = list(prep.feature_names_in_)
    for rows in (frame, new):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = prep.transform(rows)
            assert prep._direct(rows[cols]) is not None  # the path under test
        warned = [w for w in caught if "'mauve'" in str(w.message)]
        assert len(warned) == (0 if rows is frame else 2)  # transform's, then _direct's
        assert all(w.category is UnknownCategoryWarning for w in warned)
        assert warned[:1] == [] or warned[0].filename == __file__  # at the caller
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = prep.transformer_.transform(
                _prepared(rows[cols], cols, prep.numeric_, prep.categorical_)
            )
        np.testing.assert_array_equal(got.to_numpy(), np.asarray(ref, np.float64))
        assert list(got.columns) == list(prep.feature_names_out_)
        assert got.index.equals(rows.index)
