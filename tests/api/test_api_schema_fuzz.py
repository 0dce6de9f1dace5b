"""The API schema fuzzed with schemathesis: no input it generates makes a 500 (or a traceback).

Each operation of the OpenAPI schema gets a bounded number of generated requests, valid and
invalid (hypothesis drives schemathesis' strategies directly: its pytest plugin does not run on
this pytest), against the real app on the test Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from api_server import TOKEN
from stablenew.api import ApiSettings, create_app
from stablenew.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 15  # 13 operations: the whole fuzz stays well under a minute


def test_no_generated_request_makes_a_server_error(
    connection: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    app = create_app(
        Settings(redis_url=redis_url, output_dir=tmp_path / "outputs"),
        ApiSettings(token=TOKEN),
        connection=connection,
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            case.validate_response(response, checks=[not_a_server_error])
            assert "Traceback" not in response.text, (case.operation.label, response.text)

        fuzz()
