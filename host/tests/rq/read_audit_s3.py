#!/usr/bin/env python3
"""Reads a retryguard audit trail in a bucket the way docs/audit.md tells outside readers to:
the parts `_manifest.json` lists, through pyarrow's S3FileSystem, as a dataset with hive
partitioning (the `date` column). Then, apart from the manifest, every part object a listing
of the prefix finds (compaction inputs and late puts included). Prints what it found as JSON;
the Rust test (audit_s3.rs) compares it with what retryguard wrote and with the schema.

    python read_audit_s3.py ENDPOINT BUCKET PREFIX [ACCESS_KEY SECRET_KEY REGION]
"""

import json
import re
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

endpoint, bucket, prefix = sys.argv[1:4]
access_key, secret_key, region = sys.argv[4:7] or ["test", "test", "us-east-1"]
scheme, host = endpoint.split("://", 1)
s3 = pafs.S3FileSystem(
    endpoint_override=host,
    scheme=scheme,
    access_key=access_key,
    secret_key=secret_key,
    region=region,
)
base = f"{bucket}/{prefix}".rstrip("/")
PART = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/part-(\d+-\d+)_(\d+-\d+)\.parquet$")


def sid(s):
    ms, seq = s.split("-")
    return (int(ms), int(seq))


# The manifest's parts, as one dataset.
with s3.open_input_stream(f"{base}/_manifest.json") as f:
    manifest = json.loads(f.read())
parts = manifest["parts"]
paths = [f"{bucket}/{p['key']}" for p in parts]
dataset = ds.dataset(
    paths,
    filesystem=s3,
    format="parquet",
    partitioning=ds.partitioning(flavor="hive"),
    partition_base_dir=base,
)
table = dataset.to_table()
schema = {f.name: str(f.type) for f in table.schema}
days = pc.strftime(table["timestamp"], format="%Y-%m-%d")
wrong = pc.sum(pc.cast(pc.not_equal(pc.cast(table["date"], "string"), days), "int64")).as_py() or 0
record_ids = table["record_id"].to_pylist()
decisions = {}
for d in table["decision"].to_pylist():
    decisions[d] = decisions.get(d, 0) + 1
# A manifest part inside another's range would be a compaction input: the manifest must not
# name one (readers that take the manifest as it is would read its records twice).
ranges = [(sid(p["first"]), sid(p["last"]), p["key"]) for p in parts]
nested = sorted(
    {
        k
        for (a0, a1, k) in ranges
        for (b0, b1, other) in ranges
        if k != other and b0 <= a0 and a1 <= b1
    }
)
# A part's name says its range: the records in it must lie inside.
outside_name = []
for p in parts:
    got = pq.read_table(f"{bucket}/{p['key']}", filesystem=s3, columns=["record_id"])
    ids = [sid(r) for r in got["record_id"].to_pylist()]
    if ids and (min(ids) < sid(p["first"]) or max(ids) > sid(p["last"])):
        outside_name.append(p["key"])

# Every part object in the bucket, listed (not the manifest): no record in two of them.
listed = s3.get_file_info(pafs.FileSelector(base, recursive=True))
objects = []
for info in listed:
    if info.type != pafs.FileType.File:
        continue
    rel = info.path[len(base) + 1 :]
    if PART.match(rel):
        objects.append(info.path)
seen = {}
duplicates = []
all_rows = 0
for path in sorted(objects):
    ids = pq.read_table(path, filesystem=s3, columns=["record_id"])["record_id"].to_pylist()
    all_rows += len(ids)
    for r in ids:
        if r in seen:
            duplicates.append({"record_id": r, "objects": [seen[r], path]})
        else:
            seen[r] = path
manifest_keys = {f"{bucket}/{p['key']}" for p in parts}

print(
    json.dumps(
        {
            "manifest_version": manifest.get("version"),
            "manifest_parts": len(parts),
            "manifest_nested_parts": nested,
            "parts_with_records_outside_their_name": outside_name,
            "rows": table.num_rows,
            "distinct_record_ids": len(set(record_ids)),
            "record_ids": sorted(set(record_ids), key=sid),
            "by_decision": decisions,
            "rows_in_wrong_partition": wrong,
            "schema": schema,
            "objects": {
                "parts": len(objects),
                "not_in_manifest": sorted(set(objects) - manifest_keys),
                "rows": all_rows,
                "distinct_record_ids": len(seen),
                "duplicates": duplicates[:20],
                "duplicate_count": len(duplicates),
            },
        }
    )
)
