"""schemathesis over the OpenAPI document (``/api``) against the app on a real PostGIS (issue 12):
every documented operation, anonymous and with a township-scoped key — 0 server errors (5xx),
0 undocumented status codes, 0 undocumented content types.

Each of the 25 operations gets ``MUJUN_SCHEMATHESIS_EXAMPLES`` valid and as many invalid
(negative) cases per caller — default 25: about 870 cases per caller, 1750 in all, under two
minutes on the 2-core CI machine. Run more with e.g.
``MUJUN_SCHEMATHESIS_EXAMPLES=500 .venv/bin/pytest tests/test_schemathesis.py -s`` (``-s`` prints the
case count and the statuses seen).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from app.main import create_app
from app.settings import Settings
from tests.conftest import TEMPLATE
from tests.test_tiles import seed_county

EXAMPLES = int(os.environ.get("MUJUN_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]
KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzz_app(_template, pg_admin_url, tmp_path_factory):
    name = f"mujun_st_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = str(sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    county = seed_county(url)
    KEYS["township"] = county.keys["viewer_t1"]
    # a short statement timeout: a generated query that would run long is a 503 Timeout, as documented
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("st"), statement_timeout_ms=3000),
                     database_url=url)
    with TestClient(app):  # runs the lifespan: engine and key resolver on app.state
        yield app
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/api", fuzz_app)


def _fuzz(schema, headers: dict) -> tuple[Counter, list[str]]:
    """Every operation, valid and invalid inputs: ``(statuses seen, failures as 'operation: error')``."""
    statuses, failures = Counter(), []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def check(case):
                response = case.call_and_validate(headers=headers, checks=CHECKS)
                statuses[response.status_code] += 1

            try:
                check()
            except Unsatisfiable:  # nothing to negate (no parameter, or only free-text ones)
                pass
            except Exception as exc:  # noqa: BLE001 - collect all, report all
                failures.append(f"{op.label} [{mode.value}]: {str(exc)[:1500]}")
    return statuses, failures


@pytest.mark.parametrize("caller", ["anonymous", "township key"])
def test_api_fuzzed(api_schema, caller):
    headers = {"X-API-Key": KEYS["township"]} if caller == "township key" else {}
    statuses, failures = _fuzz(api_schema, headers)
    print(f"schemathesis, {caller}: {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    # the cases reach the real code: successes and refusals both, and nothing else
    assert statuses[200] >= 2 * EXAMPLES and statuses[400] >= EXAMPLES
    assert set(statuses) <= {200, 204, 304, 400, 401, 403, 404, 503}
