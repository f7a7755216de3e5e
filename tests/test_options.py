"""The option tables of ``apps/options.toml`` are complete and every help page renders."""

import argparse

import pytest

from jaxreg.apps.options import option_tables
from jaxreg.cli import build_parser, main

KEYS = {"type", "default", "help", "metavar", "flag", "action", "required", "choices", "values"}


def test_every_option_has_help_and_known_keys():
    for section, options in option_tables().items():
        if section == "commands":
            continue
        for flag, kw in options.items():
            assert flag.startswith("--"), (section, flag)
            assert kw.get("help"), f"{section} {flag} has no help text"
            assert set(kw) <= KEYS, f"{section} {flag}: unknown keys {set(kw) - KEYS}"
            if "type" in kw and "default" in kw:
                assert type(kw["default"]).__name__ == kw["type"], (section, flag)


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_section_reaches_a_parser_and_every_help_page_renders():
    seen = []
    for p in _parsers(build_parser()):
        assert p.format_help()
        seen.append({s for a in p._actions for s in a.option_strings})
    assert len(seen) == 1 + len(option_tables()["commands"])
    for section, options in option_tables().items():
        if section != "commands":
            assert any(set(options) <= flags for flags in seen), f"{section} is in no parser"


@pytest.mark.parametrize("argv", [["fit"], ["sweep"], ["demo", "polynomial"], ["lecture"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "(default: " in capsys.readouterr().out


def test_the_listed_values_are_the_libraries_names():
    from jaxreg.model import ACTIVATIONS
    from jaxreg.optim import OPTIMIZERS

    fit = option_tables()["fit"]
    assert sorted(fit["--activation"]["values"]) == sorted(ACTIVATIONS)
    assert fit["--optimizer"]["values"] == list(OPTIMIZERS)
    from jaxreg.optim import SCHEDULES

    assert fit["--schedule"]["values"] == list(SCHEDULES)


def test_the_fit_defaults_are_the_estimators():
    from jaxreg import MLPRegressor, estimator
    from jaxreg.apps import fitcmd

    est, fit = MLPRegressor(), option_tables()["fit"]
    assert fit["--hidden"]["default"] == est.hidden_layer_sizes == "auto"
    assert fitcmd.AUTO_WIDEST == max(estimator.AUTO_WIDE)  # the CLI's guess before JAX
    assert fit["--activation"]["default"] == est.activation
    assert fit["--optimizer"]["default"] == est.optimizer
    assert est.schedule is None and fit["--schedule"]["default"] == "constant"
    assert fit["--lr"]["default"] == est.learning_rate
    assert fit["--epochs"]["default"] == est.epochs
    assert fit["--batch-size"]["default"] == est.batch_size
    assert fit["--tol"]["default"] == est.tol
    assert fit["--max-fun"]["default"] == est.max_fun
    # Keras's patience counts the epoch that stops: scikit-learn's n_iter_no_change + 1.
    assert fit["--patience"]["default"] == est.n_iter_no_change + 1
