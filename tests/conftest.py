import jax
import pytest

# Core modules (model, loss, optim, engine) are tested both compiled and op by op: a test
# that passes only under jit (or only without it) hides a bug.
CORE = {"test_model", "test_loss_optim", "test_engine"}


def pytest_collection_modifyitems(items):
    # The longest tests (subprocesses, several processes) first: with two workers, a long
    # test collected last would run alone at the end and stretch the suite.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__.rsplit(".", 1)[-1] in CORE:
        metafunc.fixturenames.append("jit_mode")
        metafunc.parametrize("jit_mode", ["jit", "nojit"])


@pytest.fixture
def jit_mode(request):
    return request.param


@pytest.fixture(autouse=True)
def _strict_jax(request):
    # A silent (n,) vs (n, 1) broadcast or an implicit dtype promotion is a bug: make them
    # errors in every test.
    nojit = "jit_mode" in request.fixturenames and request.getfixturevalue("jit_mode") == "nojit"
    # Optax itself relies on standard promotion: tests that call it as a reference say so.
    promotion = "standard" if request.node.get_closest_marker("optax_reference") else "strict"
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion(promotion):
        if nojit:
            with jax.disable_jit():
                yield
        else:
            yield
