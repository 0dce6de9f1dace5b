"""The reliability suite prints the figures its tests measure (recovery times, load throughput)
at the end of the run: ``make test`` shows them, so anyone can reproduce the README's table."""

from __future__ import annotations

from typing import Any

import pytest

_FIGURES: list[tuple[str, str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and "tests/reliability/" in report.nodeid:
        test = report.nodeid.rsplit("::", 1)[-1]
        _FIGURES.extend((test, key, value) for key, value in report.user_properties)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, key, value in _FIGURES:
        terminalreporter.write_line(f"{key} = {value}    ({test[:70]})")
