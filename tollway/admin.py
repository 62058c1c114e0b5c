"""Operator actions on organizations, API tokens and workflow definitions.

Used by the admin CLI and the dev stack's demo seed; the API only reads through
:func:`find_token` and :func:`find_workflow`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from tollway.definitions import WorkflowDefinition
from tollway.ids import new_id
from tollway.settings import RATE
from tollway.tables import ApiToken, Organization, PublicWorkflow, WorkflowVersion, utcnow

TOKEN_PREFIX = "tw_"
DEFAULT_SCOPES = ("executions:create", "executions:read")
# "codec": an operator decoding payloads in the Temporal UI (never given by default).
KNOWN_SCOPES = frozenset({*DEFAULT_SCOPES, "codec"})


class AdminError(ValueError):
    """An operator asked for something that cannot be done; the message says why."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_rate_limit(value: str) -> str:
    if not RATE.match(value):
        raise AdminError(f"rate limit {value!r} must look like N/second, N/minute or N/hour")
    return value


def create_organization(engine: Engine, name: str) -> Organization:
    name = name.strip()
    if not name:
        raise AdminError("organization name must not be empty")
    org = Organization(id=new_id("org"), name=name)
    with Session(engine) as session:
        session.add(org)
        session.commit()
        session.refresh(org)
    return org


def list_organizations(engine: Engine) -> list[Organization]:
    with Session(engine) as session:
        return list(session.exec(select(Organization).order_by(col(Organization.created_at))))


def find_organization_by_name(engine: Engine, name: str) -> Organization | None:
    with Session(engine) as session:
        return session.exec(select(Organization).where(Organization.name == name)).first()


def _require_org(session: Session, organization_id: str) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None:
        raise AdminError(f"organization {organization_id!r} does not exist")
    return org


def create_token(
    engine: Engine,
    organization_id: str,
    rate_limit: str,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plaintext token, which is never stored."""
    validate_rate_limit(rate_limit)
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise AdminError(f"unknown scopes {unknown}; known: {sorted(KNOWN_SCOPES)}")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session:
        _require_org(session, organization_id)
        row = ApiToken(
            id=new_id("tok"),
            organization_id=organization_id,
            token_hash=hash_token(plaintext),
            token_prefix=plaintext[:10],
            scopes=list(scopes),
            rate_limit=rate_limit,
        )
        session.add(row)
        session.commit()
        session.refresh(row)
    return row, plaintext


def list_tokens(engine: Engine, organization_id: str | None = None) -> list[ApiToken]:
    with Session(engine) as session:
        query = select(ApiToken).order_by(col(ApiToken.created_at))
        if organization_id:
            query = query.where(ApiToken.organization_id == organization_id)
        return list(session.exec(query))


def revoke_token(engine: Engine, token_id: str) -> ApiToken:
    """Revoke a token (again: a no-op). APIs stop accepting it within their auth cache time."""
    with Session(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise AdminError(f"token {token_id!r} does not exist")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.add(row)
            session.commit()
            session.refresh(row)
        return row


def find_token_by_id(engine: Engine, token_id: str) -> ApiToken | None:
    with Session(engine) as session:
        row = session.get(ApiToken, token_id)
    return row if row is not None and row.revoked_at is None else None


def find_token(engine: Engine, plaintext: str) -> ApiToken | None:
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    with Session(engine) as session:
        row = session.exec(
            select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext))
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def create_workflow(
    engine: Engine, organization_id: str, definition: WorkflowDefinition
) -> PublicWorkflow:
    with Session(engine) as session:
        _require_org(session, organization_id)
        wf = PublicWorkflow(id=new_id("wf"), organization_id=organization_id, current_version=1)
        session.add(wf)
        session.flush()
        session.add(
            WorkflowVersion(workflow_id=wf.id, version=1, definition=definition.model_dump())
        )
        session.commit()
        session.refresh(wf)
    return wf


def publish_version(engine: Engine, workflow_id: str, definition: WorkflowDefinition) -> int:
    """Store a new version and make it current; running executions keep theirs."""
    with Session(engine) as session:
        wf = session.get(PublicWorkflow, workflow_id, with_for_update=True)
        if wf is None:
            raise AdminError(f"workflow {workflow_id!r} does not exist")
        wf.current_version += 1
        wf.updated_at = utcnow()
        session.add(
            WorkflowVersion(
                workflow_id=wf.id, version=wf.current_version, definition=definition.model_dump()
            )
        )
        session.add(wf)
        session.commit()
        return wf.current_version


@dataclass(frozen=True)
class WorkflowRecord:
    id: str
    organization_id: str
    version: int
    definition: WorkflowDefinition


def find_workflow(engine: Engine, workflow_id: str) -> WorkflowRecord | None:
    """The current version of a workflow, or None when it does not exist."""
    with Session(engine) as session:
        wf = session.get(PublicWorkflow, workflow_id)
        if wf is None:
            return None
        version = session.exec(
            select(WorkflowVersion).where(
                WorkflowVersion.workflow_id == wf.id,
                WorkflowVersion.version == wf.current_version,
            )
        ).one()
        return WorkflowRecord(
            id=wf.id,
            organization_id=wf.organization_id,
            version=version.version,
            definition=WorkflowDefinition.model_validate(version.definition),
        )


def list_workflows(engine: Engine, organization_id: str | None = None) -> list[WorkflowRecord]:
    with Session(engine) as session:
        query = select(PublicWorkflow.id).order_by(col(PublicWorkflow.created_at))
        if organization_id:
            query = query.where(PublicWorkflow.organization_id == organization_id)
        ids = list(session.exec(query))
    return [record for wid in ids if (record := find_workflow(engine, wid)) is not None]
