"""A pytest plugin: where everything the suite needs is installed (`make test` installs it all,
and CI runs `make test`), a skipped test is a failure, not a quiet pass. On when the environment
says CI (`CI=true`) or PKS_NO_SKIPS=1 (`make test` sets it). An expected failure (xfail) is not
a skip and stays as it is."""

from __future__ import annotations

import os

import pytest


def strict() -> bool:
    return any(os.environ.get(k, "").lower() not in ("", "0", "false", "no") for k in ("CI", "PKS_NO_SKIPS"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and strict():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where nothing may be: {reason} (make test installs what the suite needs)"
