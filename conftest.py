"""What the framework's own tests share: pytest's `pytester`, and the toy suite (a suite folder like the shipped one,
on a toy dataset with toy pipelines declared as a user declares their own classes).

It sits at the top of the repository, so it also loads for `pytest suites`: it only defines fixtures, which
do nothing until a test asks for them.
"""

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def suite(pytester):
    """A toy suite in a fresh folder: the shipped test files, `fmtest.toml` from `toy_fmtest.toy_config()`."""
    from toy_fmtest import make_suite

    return make_suite(pytester)
