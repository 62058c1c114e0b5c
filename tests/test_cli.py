"""The admin CLI as an operator runs it: a real process, a real database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.helpers import GREETING, make_tenant
from tests.processes import run_tollway
from tollway import admin


def tollway(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tollway(*args, env={"DATABASE_URL": database_url})


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_org_token_workflow_create_and_list(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    org = ok_json(tollway(database_url, "admin", "org", "create", "Acme", "--json"))
    assert set(org) == {"id"} and org["id"].startswith("org_")

    token = ok_json(
        tollway(
            database_url,
            "admin",
            "token",
            "create",
            "--org",
            org["id"],
            "--rate-limit",
            "5/minute",
            "--json",
        )
    )
    assert set(token) == {"id", "token"} and token["token"].startswith("tw_")
    stored = admin.find_token(engine, token["token"])
    assert stored is not None and stored.rate_limit == "5/minute"
    assert token["token"] not in json.dumps(stored.model_dump(), default=str)

    definition = tmp_path / "greeting.yaml"
    definition.write_text(
        "name: Greeting\naccess: public_execute\nprice: {amount: 500, currency: usd}\n"
        'steps:\n  - id: shape\n    kind: transform\n    expression: "{a: request.name}"\n'
    )
    wf = ok_json(
        tollway(
            database_url,
            "admin",
            "workflow",
            "create",
            "--org",
            org["id"],
            "--file",
            str(definition),
            "--json",
        )
    )
    assert set(wf) == {"id", "version"} and wf["version"] == 1

    as_json = tmp_path / "v2.json"
    as_json.write_text(json.dumps(GREETING))
    v2 = ok_json(
        tollway(
            database_url, "admin", "workflow", "update", wf["id"], "--file", str(as_json), "--json"
        )
    )
    assert v2 == {"id": wf["id"], "version": 2}

    listed = ok_json(
        tollway(database_url, "admin", "workflow", "list", "--org", org["id"], "--json")
    )
    assert [(w["id"], w["version"], w["name"]) for w in listed] == [(wf["id"], 2, "Greeting")]
    tokens = ok_json(tollway(database_url, "admin", "token", "list", "--org", org["id"], "--json"))
    assert [t["id"] for t in tokens] == [token["id"]]
    assert "token" not in tokens[0]
    orgs = ok_json(tollway(database_url, "admin", "org", "list", "--json"))
    assert org["id"] in {o["id"] for o in orgs}
    human = tollway(database_url, "admin", "workflow", "list", "--org", org["id"])
    assert wf["id"] in human.stdout and "v2" in human.stdout


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        ("{not json", ".json", "not valid JSON: line 1"),
        ("a: [unclosed", ".yaml", "not valid YAML"),
        ("[1, 2]", ".json", "a definition must be an object"),
        (
            json.dumps({**GREETING, "steps": [{"id": "s", "kind": "transform"}]}),
            ".json",
            "steps[0].expression: Field required",
        ),
        (json.dumps({**GREETING, "steps": [{"id": "s", "kind": "teleport"}]}), ".json", "steps[0]"),
        (
            json.dumps(
                {**GREETING, "steps": [{"id": "s", "kind": "transform", "expression": "a.["}]}
            ),
            ".json",
            "steps[0].expression: Value error, invalid JMESPath expression",
        ),
        (
            json.dumps({**GREETING, "price": {"amount": -5, "currency": "usd"}}),
            ".json",
            "price.amount",
        ),
        (
            json.dumps({**GREETING, "price": {"amount": 5, "currency": "USD$"}}),
            ".json",
            "price.currency",
        ),
        (json.dumps({**GREETING, "colour": "red"}), ".json", "colour: Extra inputs"),
        (
            json.dumps(
                {
                    **GREETING,
                    "steps": [
                        {
                            "id": "c",
                            "kind": "http",
                            "url": "http://x",
                            "headers": {"A": {"secret": "bad name"}},
                        }
                    ],
                }
            ),
            ".json",
            "steps[0].headers.A.secret: String should match pattern",
        ),
        (
            json.dumps({**GREETING, "steps": [{"id": "c", "kind": "http"}]}),
            ".json",
            "steps[0].url: Field required",
        ),
        (
            json.dumps(
                {
                    **GREETING,
                    "steps": [{"id": "w", "kind": "wait_for_callback", "timeoutSeconds": 0}],
                }
            ),
            ".json",
            "steps[0].timeoutSeconds: Input should be greater than 0",
        ),
        (
            json.dumps({**GREETING, "steps": [{"id": "p", "kind": "python", "activity": "a b"}]}),
            ".json",
            "steps[0].activity",
        ),
        (json.dumps({**GREETING, "maxConcurrency": 0}), ".json", "maxConcurrency"),
        (
            json.dumps(
                {
                    **GREETING,
                    "steps": [
                        {
                            "id": "s",
                            "kind": "transform",
                            "expression": "`1`",
                            "retry": {"maxAttempts": 0},
                        }
                    ],
                }
            ),
            ".json",
            "steps[0].retry.maxAttempts",
        ),
    ],
)
def test_bad_definition_file_names_the_field_and_stores_nothing(
    database_url: str, engine: Engine, tmp_path: Path, content: str, suffix: str, expected: str
) -> None:
    org = admin.create_organization(engine, "Bad files")
    path = tmp_path / f"definition{suffix}"
    path.write_text(content)
    result = tollway(
        database_url, "admin", "workflow", "create", "--org", org.id, "--file", str(path), "--json"
    )
    assert result.returncode == 2
    # Under --json the error is JSON too, on stdout; without it, lines on stderr.
    error = json.loads(result.stdout)
    assert error["error"] == "invalid workflow definition"
    assert any(expected in detail for detail in error["details"]), error
    assert "Traceback" not in result.stderr
    plain = tollway(
        database_url, "admin", "workflow", "create", "--org", org.id, "--file", str(path)
    )
    assert plain.returncode == 2 and expected in plain.stderr, plain.stderr
    assert admin.list_workflows(engine, org.id) == []


def test_missing_file_unknown_org_and_bad_rate_limit_are_clear_errors(
    database_url: str, tmp_path: Path
) -> None:
    missing = tollway(
        database_url,
        "admin",
        "workflow",
        "create",
        "--org",
        "org_x",
        "--file",
        str(tmp_path / "nope.json"),
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(GREETING))
    unknown = tollway(
        database_url, "admin", "workflow", "create", "--org", "org_x", "--file", str(path)
    )
    assert unknown.returncode == 2 and "organization 'org_x' does not exist" in unknown.stderr
    rate = tollway(
        database_url, "admin", "token", "create", "--org", "org_x", "--rate-limit", "lots"
    )
    assert rate.returncode == 2 and "N/second" in rate.stderr


def test_schema_is_printed(database_url: str) -> None:
    schema = ok_json(tollway(database_url, "admin", "workflow", "schema"))
    assert schema["title"] == "WorkflowDefinition"
    assert "steps" in schema["properties"]


async def test_revoked_token_is_refused_and_listed_as_revoked(
    database_url: str, engine: Engine, http: Any
) -> None:
    tenant = make_tenant(engine)
    before = await http.get(
        f"/v1/public/workflows/{tenant.free_wf}/executions", headers=tenant.auth
    )
    assert before.status_code == 200
    revoked = ok_json(tollway(database_url, "admin", "token", "revoke", tenant.token_id, "--json"))
    assert revoked["id"] == tenant.token_id and revoked["revokedAt"]
    again = ok_json(tollway(database_url, "admin", "token", "revoke", tenant.token_id, "--json"))
    assert again == revoked  # revoking twice changes nothing
    listed = ok_json(
        tollway(database_url, "admin", "token", "list", "--org", tenant.org_id, "--json")
    )
    assert [(t["id"], t["revoked"]) for t in listed] == [(tenant.token_id, True)]
    human = tollway(database_url, "admin", "token", "list", "--org", tenant.org_id)
    assert "revoked" in human.stdout
    after = await http.get(f"/v1/public/workflows/{tenant.free_wf}/executions", headers=tenant.auth)
    assert after.status_code == 401  # the tests' auth cache is 0 s
    unknown = tollway(database_url, "admin", "token", "revoke", "tok_nope")
    assert unknown.returncode == 2 and "does not exist" in unknown.stderr
    help_text = tollway(database_url, "admin", "token", "revoke", "--help").stdout
    assert "auth cache" in help_text
