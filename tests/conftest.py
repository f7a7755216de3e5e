import jax
import pytest


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # A silent (n,) vs (n, 1) broadcast is a bug: make it an error in every test.
    with jax.numpy_rank_promotion("raise"):
        yield
