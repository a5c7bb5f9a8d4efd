"""Generates `default_rules.py`, the default policy's classification tables, from the Rust
source they live in (`policies/default/src/rules.rs`), so the Python port cannot drift from
them: policies/python/build.sh runs it before every build.

    python3 gen_rules.py ../default/src/rules.rs OUT_DIR/default_rules.py

Only the tables are read: `INTERRUPTED_TYPE_TABLE`, `RQ_NO_EXCEPTION_TEXTS`, `TYPE_RULE_TABLE`,
`MESSAGE_RULE_TABLE`, `HTTP_STATUS_RULE_TABLE`, `HTTP_CONTEXT_TYPES` and
`HTTP_CONTEXT_PHRASE_TABLE`. The logic that uses them is ported by hand in `app.py`.
"""

import re
import sys

# FailureType variants, by their contract name; the first five are retryable
# (`FailureType::is_retryable` in policies/default/src/rules.rs).
VARIANTS = {
    "NetworkError": "network_error",
    "Timeout": "timeout",
    "RateLimit": "rate_limit",
    "DatabaseLock": "database_lock",
    "TemporaryError": "temporary_error",
    "ValidationError": "validation_error",
    "LogicError": "logic_error",
    "DataNotFound": "data_not_found",
    "PermissionError": "permission_error",
    "ConfigurationError": "configuration_error",
    "Unknown": "unknown",
}
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def tokens(source):
    """Rust source as ("str", value) and ("code", text) tokens, comments dropped."""
    out, code, i, n = [], [], 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            i = source.find("\n", i)
            i = n if i < 0 else i
        elif c == '"':
            out.append(("code", "".join(code)))
            code = []
            i += 1
            value = []
            while source[i] != '"':
                if source[i] == "\\":
                    e = source[i + 1]
                    if e == "\n":  # line continuation: skip the newline and indentation
                        i += 2
                        while source[i] in " \t\n\r":
                            i += 1
                        continue
                    if e == "u":
                        end = source.index("}", i)
                        value.append(chr(int(source[i + 3 : end], 16)))
                        i = end + 1
                        continue
                    value.append(ESCAPES[e])
                    i += 2
                else:
                    value.append(source[i])
                    i += 1
            out.append(("str", "".join(value)))
            i += 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", source[i : i + 4]):
            # a char literal (none in the tables, but never mistake one for code)
            end = source.index("'", i + 2 if source[i + 1] == "\\" else i + 1) + 1
            code.append(source[i:end])
            i = end
        else:
            code.append(c)
            i += 1
    out.append(("code", "".join(code)))
    return out


def table(toks, name):
    """The tokens of `NAME ... = &[ ... ];`."""
    for k, (kind, text) in enumerate(toks):
        if kind == "code" and re.search(r"\b%s\s*:" % name, text):
            start = k
            break
    else:
        raise SystemExit(f"gen_rules.py: table {name} not found")
    # From the `= &[` after the name up to the `];` that closes it.
    body = []
    opened = False
    for kind, text in toks[start:]:
        if kind == "code":
            if not opened:
                at = text.find("= &[", text.index(name) if name in text else 0)
                if at < 0:
                    continue
                opened = True
                text = text[at + 4 :]
            end = text.find("];")
            if end >= 0:
                body.append(("code", text[:end]))
                return body
        if opened:
            body.append((kind, text))
    raise SystemExit(f"gen_rules.py: table {name} not closed")


def strings(body):
    return [text for kind, text in body if kind == "str"]


def calls(body, fn):
    """`fn("text", Variant)` rows, in order."""
    rows = []
    for k, (kind, text) in enumerate(body):
        if kind == "str" and k > 0 and re.search(r"\b%s\(\s*$" % fn, body[k - 1][1]):
            variant = re.match(r"\s*,\s*(\w+)", body[k + 1][1])
            if not variant or variant.group(1) not in VARIANTS:
                raise SystemExit(f"gen_rules.py: bad row {fn}({text!r}, ...)")
            rows.append((text, VARIANTS[variant.group(1)]))
    calls_in_code = sum(len(re.findall(r"\b%s\(" % fn, t)) for kind, t in body if kind == "code")
    if calls_in_code != len(rows):
        raise SystemExit(f"gen_rules.py: {calls_in_code} {fn}(...) calls, {len(rows)} parsed")
    return rows


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: gen_rules.py RULES_RS OUT_PY")
    with open(sys.argv[1], encoding="utf-8") as f:
        source = f.read()
    # Only the tables, not the tests after them.
    source = source.split("#[cfg(test)]")[0]
    toks = tokens(source)
    no_exception = strings(table(toks, "RQ_NO_EXCEPTION_TEXTS"))
    if len(no_exception) % 2:
        raise SystemExit("gen_rules.py: RQ_NO_EXCEPTION_TEXTS is not pairs")
    tables = {
        "INTERRUPTED_TYPES": strings(table(toks, "INTERRUPTED_TYPE_TABLE")),
        "RQ_NO_EXCEPTION_TEXTS": list(zip(no_exception[::2], no_exception[1::2])),
        "TYPE_RULES": calls(table(toks, "TYPE_RULE_TABLE"), "t"),
        "MESSAGE_RULES": calls(table(toks, "MESSAGE_RULE_TABLE"), "m"),
        "HTTP_STATUS_RULES": calls(table(toks, "HTTP_STATUS_RULE_TABLE"), "s"),
        "HTTP_CONTEXT_TYPES": strings(table(toks, "HTTP_CONTEXT_TYPES")),
        "HTTP_CONTEXT_PHRASES": strings(table(toks, "HTTP_CONTEXT_PHRASE_TABLE")),
    }
    for name, rows in tables.items():
        if not rows:
            raise SystemExit(f"gen_rules.py: {name} is empty")
    lines = [
        "# Generated by policies/python/gen_rules.py from policies/default/src/rules.rs.",
        "# Do not edit: rebuild with policies/python/build.sh.",
        "",
    ]
    for name, rows in tables.items():
        lines.append(f"{name} = (")
        lines.extend(f"    {row!r}," for row in rows)
        lines.append(")")
        lines.append("")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    counts = ", ".join(f"{len(rows)} {name}" for name, rows in tables.items())
    print(f"gen_rules.py: {counts}")


if __name__ == "__main__":
    main()
