"""docs/configuration.md lists every key the code accepts and does not send, with the code's reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from stablenew.pipeline import KEPT_SECTIONS, NOT_SENT

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("key", "reason"),
    [(key, reason) for keys in NOT_SENT.values() for key, reason in keys.items()]
    + list(KEPT_SECTIONS.items()),
)
def test_each_accepted_and_not_sent_key_is_in_the_reference_with_its_reason(key: str, reason: str) -> None:
    assert f"| `{key}` | {reason} |" in DOC
