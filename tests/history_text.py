"""Temporal history as text a person could read, every payload decoded.

``WorkflowHistory.to_json()`` keeps payloads base64-encoded, so "secret not in history" on it
proves nothing about inputs, results, memo, search attributes or update arguments. This walks
the history protobuf and decodes each ``Payload``'s data (our converter writes JSON) next to
the rest of the history's fields -- after the payload codec has decrypted them.
"""

from __future__ import annotations

from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client


def _payloads(message: Message) -> list[Payload]:
    found: list[Payload] = []
    if isinstance(message, Payload):
        return [message]
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if isinstance(value, Message):
            values = [value]
        elif hasattr(value, "values") and callable(value.values):  # a map field
            values = list(value.values())
        else:  # a repeated field
            values = list(value)
        for item in values:
            if isinstance(item, Message):
                found.extend(_payloads(item))
    return found


async def decoded_history(client: Client, workflow_id: str) -> str:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    parts = []
    for event in history.events:
        parts.append(MessageToJson(event))
        found = _payloads(event)
        codec = client.data_converter.payload_codec
        decoded = await codec.decode(found) if codec and found else found
        parts.extend(p.data.decode("utf-8", "replace") for p in decoded)
    text = "\n".join(parts)
    assert '"eventType"' in text  # the walk found events at all
    return text
