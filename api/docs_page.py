"""``/openapi.json`` and ``/docs``: the document, and a page that renders it on the server —
no script, no external asset, so it works offline and under a strict CSP."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from api.openapi import openapi_document

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem}"
    "code,pre{font:13px ui-monospace,monospace}pre{background:#f6f6f6;padding:.6rem;"
    "overflow:auto}h2{margin-top:2.5rem;border-top:1px solid #ddd;padding-top:1rem}"
    "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;"
    "text-align:left;vertical-align:top}.m{font-weight:700;text-transform:uppercase}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'"


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document())


async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": CSP})


def _schema_text(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    return f"<code>{escape(json.dumps(schema, separators=(',', ':')))}</code>"


def _operation(path: str, method: str, op: dict[str, Any], shared: list[Any]) -> str:
    parts = [
        f'<h3 id="{escape(op["operationId"])}"><span class="m">{escape(method)}</span> '
        f"<code>{escape(path)}</code> — {escape(op.get('summary', ''))}</h3>"
    ]
    if op.get("description"):
        parts.append(f"<p>{escape(op['description'])}</p>")
    schemes = [name for entry in op.get("security", []) for name in entry]
    parts.append(f"<p>Auth: {escape(', '.join(schemes) or 'none')}</p>")
    params = [*shared, *op.get("parameters", [])]
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_schema_text(p['schema'])}</td>"
            f"<td>{escape(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append(
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th>"
            f"<th></th></tr>{rows}</table>"
        )
    body = op.get("requestBody")
    if body:
        for media, content in body["content"].items():
            parts.append(f"<p>Body ({escape(media)}): {_schema_text(content['schema'])}</p>")
    rows = ""
    for code, response in op["responses"].items():
        shapes = ", ".join(
            f"{escape(media)} {_schema_text(content['schema'])}"
            for media, content in response.get("content", {}).items()
        )
        rows += (
            f"<tr><td>{escape(code)}</td><td>{escape(response['description'])}</td>"
            f"<td>{shapes}</td></tr>"
        )
    parts.append(f"<table><tr><th>status</th><th>when</th><th>body</th></tr>{rows}</table>")
    return "\n".join(parts)


@cache
def _page() -> str:
    document = openapi_document()
    info = document["info"]
    sections = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method != "parameters":
                sections.append(_operation(path, method, op, shared))
    schemas = "\n".join(
        f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>'
        f"<pre>{escape(json.dumps(schema, indent=2))}</pre>"
        for name, schema in document["components"]["schemas"].items()
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(info['title'])} API</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(info['title'])} API</h1><p>{escape(info['description'])}</p>"
        '<p>The machine-readable document: <a href="/openapi.json">/openapi.json</a> '
        "(OpenAPI 3.1).</p>"
        f"<h2>Operations</h2>{''.join(sections)}<h2>Schemas</h2>{schemas}</body></html>"
    )
