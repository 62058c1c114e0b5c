"""The ID of a published workflow's concurrency-slot workflow."""


def slots_id(public_workflow_id: str) -> str:
    return f"tollway-slots-{public_workflow_id}"
