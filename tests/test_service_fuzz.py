"""Property-based fuzzing of the service from its own OpenAPI schema (schemathesis, bounded and seeded).

Each operation gets 30 generated requests that fit the schema and 30 that do not, against the app
without and with an API key; schemathesis' checks assert no 5xx, declared status codes and content
types, responses that conform to the declared schemas, and rejection of invalid input.
(schemathesis' lazy ``from_fixture`` loader does not run under pytest 9, hence ``as_strategy``.)
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from tbpr.search.service import create_app

KEY = "fuzz-key"
OPERATIONS = [
    ("/api/search", "POST"),
    ("/api/similar", "POST"),
    ("/api/images/{image_id}", "GET"),
    ("/api/health", "GET"),
]
FUZZ_SETTINGS = settings(
    max_examples=30,
    derandomize=True,  # the same examples on every run
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module", params=[None, KEY], ids=["open", "keyed"])
def api_schema(request, tiny_searcher):
    app = create_app(tiny_searcher, api_key=request.param, allowed_hosts=("testserver",))  # its Host
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema):
    found = {(op.ok().path, op.ok().method.upper()) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(
    "path,method,mode",
    [
        *((path, method, GenerationMode.POSITIVE) for path, method in OPERATIONS),
        # /api/health takes no input, so there is nothing invalid to generate for it
        *((path, method, GenerationMode.NEGATIVE) for path, method in OPERATIONS if path != "/api/health"),
    ],
)
def test_operation_conforms_to_its_schema(api_schema, path, method, mode):
    # explicit credentials: schemathesis then also probes the operation without them and with wrong ones
    keyed = "security" in api_schema.raw_schema
    headers = {"X-API-Key": KEY, "Authorization": f"Bearer {KEY}"} if keyed else None
    statuses = []

    @FUZZ_SETTINGS
    @given(case=api_schema[path][method].as_strategy(mode))
    def check(case):
        response = case.call_and_validate(headers=headers)
        assert response.status_code < 500
        statuses.append(response.status_code)

    check()
    assert statuses
    if mode is GenerationMode.POSITIVE and path not in ("/api/images/{image_id}", "/api/similar"):
        assert 200 in statuses  # valid requests do get answers (random image ids are unknown: 404)
