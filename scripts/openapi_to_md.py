#!/usr/bin/env python3
"""Writes a Markdown API reference from an OpenAPI 3.x JSON document.

Usage:
    python3 scripts/openapi_to_md.py SOURCE [-o FILE]

SOURCE is a file path or an http(s) URL, e.g. the /openapi.json of a running
`retryguard serve`:

    python3 scripts/openapi_to_md.py http://127.0.0.1:8000/openapi.json > docs/api.md

Standard library only. The output depends only on the document (no date, no source
address), so regenerating from an unchanged server gives identical bytes.

Per operation: method, path, summary and description, the role it needs, a parameters
table, the request body's schema, and a responses table (status, description, headers,
content type, schema). Then every schema in components/schemas with its properties.
"""

import argparse
import json
import re
import sys
import urllib.request

REGENERATE = "python3 scripts/openapi_to_md.py http://127.0.0.1:8000/openapi.json > docs/api.md"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def load(source):
    """The document at a URL or in a file."""
    if re.match(r"^https?://", source):
        with urllib.request.urlopen(source, timeout=30) as response:
            return json.load(response)
    with open(source, encoding="utf-8") as f:
        return json.load(f)


def one_line(text):
    """Text for a table cell: one line, pipes escaped."""
    if text is None:
        return ""
    text = " ".join(str(text).split())
    return text.replace("|", "\\|")


def paragraph(text):
    """Doc-comment text (wrapped at arbitrary points) as Markdown paragraphs."""
    if not text:
        return ""
    blocks = re.split(r"\n\s*\n", str(text).strip())
    return "\n\n".join(" ".join(b.split()) for b in blocks)


def ref_name(ref):
    return ref.rsplit("/", 1)[-1]


def anchor(name):
    return "schema-" + re.sub(r"[^a-z0-9-]", "-", name.lower())


def schema_link(name):
    return f"[`{name}`](#{anchor(name)})"


def type_str(schema):
    """A short description of a schema's type, linking named schemas."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    if "$ref" in schema:
        return schema_link(ref_name(schema["$ref"]))
    for key, sep in (("oneOf", " \\| "), ("anyOf", " \\| "), ("allOf", " & ")):
        if key in schema:
            variants = schema[key]
            nullable = key != "allOf" and {"type": "null"} in variants
            text = sep.join(type_str(s) for s in variants if s != {"type": "null"})
            return text + sep + "null" if nullable else text
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    types = schema.get("type")
    if isinstance(types, list):
        parts = [single_type(dict(schema, type=t)) for t in types if t != "null"]
        text = " \\| ".join(parts) if parts else "null"
        if "null" in types:
            text += " \\| null"
        return text
    return single_type(schema)


def single_type(schema):
    t = schema.get("type")
    if t == "array":
        return "array of " + type_str(schema.get("items", {}))
    if t == "object" or (t is None and ("properties" in schema or "additionalProperties" in schema)):
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not schema.get("properties"):
            return "object of string → " + type_str(extra)
        return "object"
    if t is None:
        return "any"
    text = t
    if schema.get("format"):
        text += f" ({schema['format']})"
    if "enum" in schema:
        text += ": " + ", ".join(f"`{v}`" for v in schema["enum"])
    return text


def constraints(schema):
    """Bounds and defaults of a parameter or property, as text."""
    if not isinstance(schema, dict):
        return ""
    out = []
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        out.append(f"{lo}–{hi}")
    elif lo is not None and lo != 0:
        out.append(f"≥ {lo}")
    elif hi is not None:
        out.append(f"≤ {hi}")
    for key, label in (("minLength", "min length"), ("maxLength", "max length"), ("pattern", "pattern")):
        if key in schema:
            out.append(f"{label} `{schema[key]}`")
    if "default" in schema and schema["default"] is not None:
        out.append(f"default `{json.dumps(schema['default'])}`")
    return ", ".join(out)


ROLE_IN_TEXT = re.compile(r"role\s+`(\w+)`")


def required_role(method, path, op):
    """The role an operation needs: from its security and the `role `x`` its summary names;
    without that, retryguard's rule (GET/HEAD read, DELETE of an idempotency key and
    /api/v1/policies admin, anything else operate)."""
    security = op.get("security")
    text = " ".join(filter(None, [op.get("summary"), op.get("description")]))
    named = ROLE_IN_TEXT.findall(" ".join(text.split()))
    if not security:
        return "none (open)"
    if method in ("get", "head"):
        role = "read"
    elif path.startswith("/api/v1/policies") or (method == "delete" and path.startswith("/api/v1/idempotency/")):
        role = "admin"
    else:
        role = "operate"
    if named:
        role = named[-1]
    if any(not s for s in security):
        return f"none by default; `{role}` when the server requires a token for it (see the summary)"
    return f"`{role}`"


def content_schema(content):
    """(content type, schema text) of a request body or response."""
    if not content:
        return "", ""
    ctype, media = next(iter(content.items()))
    return ctype, type_str(media.get("schema", {}))


def render_operation(out, method, path, op, shared_params):
    out.append(f"### `{method.upper()} {path}`")
    out.append("")
    if op.get("summary"):
        out.append(paragraph(op["summary"]))
        out.append("")
    if op.get("description"):
        out.append(paragraph(op["description"]))
        out.append("")
    if op.get("deprecated"):
        out.append("**Deprecated.**")
        out.append("")
    out.append(f"Required role: {required_role(method, path, op)}.")
    if op.get("operationId"):
        out.append(f"Operation id: `{op['operationId']}`.")
    out.append("")

    params = {(p.get("name"), p.get("in")): p for p in shared_params}
    params.update({(p.get("name"), p.get("in")): p for p in op.get("parameters", [])})
    if params:
        out.append("| parameter | in | type | required | constraints | description |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for p in params.values():
            schema = p.get("schema", {})
            out.append(
                f"| `{p.get('name')}` | {p.get('in')} | {type_str(schema)} | "
                f"{'yes' if p.get('required') else 'no'} | {one_line(constraints(schema))} | "
                f"{one_line(p.get('description'))} |"
            )
        out.append("")

    body = op.get("requestBody")
    if body:
        ctype, schema = content_schema(body.get("content"))
        required = "required" if body.get("required") else "optional"
        line = f"Request body ({required}, `{ctype}`): {schema}."
        if body.get("description"):
            line += " " + one_line(body["description"])
        out.append(line)
        out.append("")

    responses = op.get("responses", {})
    if responses:
        out.append("| status | description | headers | content type | schema |")
        out.append("| --- | --- | --- | --- | --- |")
        for status in sorted(responses, key=lambda s: (not s[:1].isdigit(), s)):
            r = responses[status]
            ctype, schema = content_schema(r.get("content"))
            headers = "; ".join(
                f"`{name}`" + (f": {one_line(h.get('description'))}" if h.get("description") else "")
                for name, h in r.get("headers", {}).items()
            )
            out.append(
                f"| {status} | {one_line(r.get('description'))} | {headers} | "
                f"{f'`{ctype}`' if ctype else ''} | {schema} |"
            )
        out.append("")


def render_schema(out, name, schema):
    out.append(f'<a id="{anchor(name)}"></a>')
    out.append("")
    out.append(f"### `{name}`")
    out.append("")
    if schema.get("description"):
        out.append(paragraph(schema["description"]))
        out.append("")
    props = schema.get("properties")
    if props:
        required = set(schema.get("required", []))
        out.append("| property | type | required | constraints | description |")
        out.append("| --- | --- | --- | --- | --- |")
        for prop, s in props.items():
            description = s.get("description") if isinstance(s, dict) else None
            if description is None and isinstance(s, dict):
                # `{"oneOf": [{"type": "null"}, {"$ref": …, "description": …}]}`
                for variant in s.get("oneOf", []) + s.get("anyOf", []):
                    if isinstance(variant, dict) and variant.get("description"):
                        description = variant["description"]
            out.append(
                f"| `{prop}` | {type_str(s)} | {'yes' if prop in required else 'no'} | "
                f"{one_line(constraints(s))} | {one_line(description)} |"
            )
        out.append("")
        if schema.get("additionalProperties") is False:
            out.append("No other properties are accepted.")
            out.append("")
    else:
        out.append(f"Type: {type_str({k: v for k, v in schema.items() if k != 'description'})}.")
        out.append("")


def render(doc):
    info = doc.get("info", {})
    out = [
        f"# {info.get('title', 'API')} HTTP API reference",
        "",
        "> Generated by `scripts/openapi_to_md.py` from the OpenAPI document the server serves at "
        "`/openapi.json`; do not edit by hand. Regenerate with a running `retryguard serve`: "
        f"`{REGENERATE}`",
        "",
        f"OpenAPI {doc.get('openapi', '?')}, API version {info.get('version', '?')}.",
        "",
    ]
    if info.get("description"):
        out += [paragraph(info["description"]), ""]

    schemes = doc.get("components", {}).get("securitySchemes", {})
    if schemes:
        out += ["## Authentication", ""]
        for name, s in schemes.items():
            kind = s.get("type", "")
            if s.get("scheme"):
                kind += f" {s['scheme']}"
            line = f"- `{name}`: {kind}."
            if s.get("description"):
                line += " " + one_line(s["description"]) + "."
            out.append(line)
        out.append("")

    # Operations, grouped by their first tag in the document's tag order.
    tag_order = [t["name"] for t in doc.get("tags", [])]
    tag_text = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    groups = {}
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                groups.setdefault(tag, []).append((path, method, op, item.get("parameters", [])))
    tags = [t for t in tag_order if t in groups] + sorted(t for t in groups if t not in tag_order)

    out += ["## Operations", ""]
    out += ["| method | path | summary | role |", "| --- | --- | --- | --- |"]
    for tag in tags:
        for path, method, op, _ in groups[tag]:
            role = required_role(method, path, op).split(";")[0]
            summary = re.sub(r"\s*\(role\s+`\w+`\)\.?$", ".", one_line(op.get("summary")))
            out.append(f"| {method.upper()} | `{path}` | {summary} | {role} |")
    out.append("")

    for tag in tags:
        title = f"## {tag}"
        if tag_text.get(tag):
            title += f": {one_line(tag_text[tag])}"
        out += [title, ""]
        for path, method, op, shared in groups[tag]:
            render_operation(out, method, path, op, shared)

    schemas = doc.get("components", {}).get("schemas", {})
    if schemas:
        out += ["## Schemas", ""]
        for name in sorted(schemas):
            render_schema(out, name, schemas[name])

    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description="OpenAPI JSON (file or URL) to a Markdown API reference.")
    parser.add_argument("source", help="a file path or an http(s) URL of an OpenAPI JSON document")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args()
    try:
        doc = load(args.source)
    except (OSError, ValueError) as e:
        print(f"error: cannot read an OpenAPI document from {args.source}: {e}", file=sys.stderr)
        return 1
    if not isinstance(doc, dict) or "paths" not in doc:
        print(f"error: {args.source} is not an OpenAPI document (no `paths`)", file=sys.stderr)
        return 1
    text = render(doc)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
