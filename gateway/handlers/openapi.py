"""`GET /openapi.json` (the OpenAPI document) and `GET /docs` (the same, as a readable page).

The page is rendered on the server from the document: plain HTML with its style inline, no
script and nothing fetched from elsewhere, so it works offline and behind strict policies.
Both are built once per app, from the routes it serves.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from gateway.apidocs import openapi

Json = dict[str, Any]


def document(request: Request) -> Json:
    state = request.app.state
    doc: Json | None = getattr(state, "openapi_document", None)
    if doc is None:
        doc = openapi.build(request.app.routes)
        state.openapi_document = doc
    return doc


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document(request))


async def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(render(document(request)), headers={"Cache-Control": "no-cache"})


# The page: pure.

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;margin-top:2.5rem}
.op{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.2rem;font-weight:600;font-family:monospace}
code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;border-radius:4px}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #e3e3e3;padding:.2rem .5rem;
text-align:left;vertical-align:top}nav a{margin-right:1rem}
"""


def render(doc: Json) -> str:
    info = doc["info"]
    sections = [_tag_section(doc, tag["name"], tag["description"]) for tag in doc["tags"]]
    schemas = "".join(
        f'<h3 id="schema-{escape(name)}">{escape(name)}</h3><pre>{escape(_dump(schema))}</pre>'
        for name, schema in doc["components"]["schemas"].items()
    )
    nav = "".join(
        f'<a href="#tag-{escape(t["name"])}">{escape(t["name"])}</a>' for t in doc["tags"]
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(info['title'])}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(info['title'])}</h1><p>{_inline(info['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
        f"{escape(doc['openapi'])}).</p><nav>{nav}<a href=#schemas>Schemas</a></nav>"
        f"{''.join(sections)}<h2 id=schemas>Schemas</h2>{schemas}</body></html>"
    )


def _tag_section(doc: Json, tag: str, description: str) -> str:
    ops = [
        _operation(doc, method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if tag in op["tags"]
    ]
    return (
        f'<h2 id="tag-{escape(tag)}">{escape(tag)}</h2><p>{escape(description)}</p>{"".join(ops)}'
    )


def _operation(doc: Json, method: str, path: str, op: Json) -> str:
    auth = "none" if not op["security"] else "bearer token" if op["security"][0] else "optional"
    parts = [
        f'<div class=op id="{escape(op["operationId"])}"><div><span class=m>{method.upper()}</span>'
        f"<code>{escape(path)}</code> — {escape(op['summary'])}</div>",
        f"<p>{_inline(op['description'])}</p><p>Auth: {auth}</p>",
    ]
    params = op.get("parameters", [])
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{p['in']}</td>"
            f"<td>{_schema_name(p['schema'])}</td><td>{escape(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append(
            f"<table><tr><th>Parameter</th><th>In</th><th>Schema</th><th></th></tr>{rows}</table>"
        )
    body = op.get("requestBody")
    if body is not None:
        kinds = ", ".join(_schema_name(m["schema"]) for m in body["content"].values())
        parts.append(f"<p>Body: {kinds}</p>")
    rows = "".join(
        f"<tr><td>{escape(status)}</td><td>{_response(doc, response)}</td></tr>"
        for status, response in sorted(op["responses"].items())
    )
    parts.append(f"<table><tr><th>Status</th><th>Response</th></tr>{rows}</table></div>")
    return "".join(parts)


def _response(doc: Json, response: Json) -> str:
    if "$ref" in response:  # a shared error response: show it in place
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    media = [
        f"<code>{escape(kind)}</code> {_schema_name(m.get('schema', {}))}"
        for kind, m in response.get("content", {}).items()
    ]
    return _inline(response["description"]) + ("<br>" + "<br>".join(media) if media else "")


def _schema_name(schema: Json) -> str:
    """A link for a named schema; for an SSE event schema, the schema of its data."""
    refs = sorted(set(_refs(schema)))
    if refs:
        return ", ".join(f'<a href="#schema-{escape(r)}">{escape(r)}</a>' for r in refs)
    return f"<code>{escape(json.dumps(schema, ensure_ascii=False))}</code>"


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        own = [schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else []
        return own + [r for value in schema.values() for r in _refs(value)]
    if isinstance(schema, list):
        return [r for value in schema for r in _refs(value)]
    return []


def _inline(text: str) -> str:
    """`code` spans as <code>; everything escaped."""
    pieces = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _dump(schema: Json) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False)
