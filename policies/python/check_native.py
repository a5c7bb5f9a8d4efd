"""A quick native check of app.py under plain CPython, before the slow component build:
every row of the contract table (host/tests/fixtures/contract/expected.tsv) must get its
failure type and retryability, whether the exception is given or parsed from the traceback.
build.sh runs it; the full comparison with the Rust default (reasons, decisions, params) is
host/tests/policy/python.rs, on the built component.

    python check_native.py BINDINGS_DIR GEN_DIR
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [sys.argv[1], sys.argv[2], here]

import app  # noqa: E402

fixtures = os.path.join(here, "..", "..", "host", "tests", "fixtures", "contract")
with open(os.path.join(fixtures, "expected.tsv"), encoding="utf-8", newline="") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
wrong = []
for file, exc_type, failure_type, retryable, job_status in filter(lambda r: r != [""], rows):
    with open(os.path.join(fixtures, file), encoding="utf-8", newline="") as f:
        text = f.read()
    parsed = app.parse_outermost(text)
    if (parsed[0] if parsed else "") != exc_type:
        wrong.append(f"{file}: parsed {parsed and parsed[0]!r}, want {exc_type!r}")
    given = parsed or ("", "")
    for how, c in (
        ("traceback", app.classify(job_status, "", "", text)),
        ("fields", app.classify(job_status, given[0], given[1], text)),
    ):
        if c.failure_type != failure_type or str(c.retryable).lower() != retryable:
            wrong.append(f"{file} ({how}): {c.failure_type} {c.retryable}, want {failure_type}")
if wrong:
    sys.exit("check_native.py: the port disagrees with the contract table:\n" + "\n".join(wrong))
print(f"check_native.py: {len(rows)} contract rows classified as expected.tsv says")
