#!/usr/bin/env python3
"""Reads a retryguard audit trail in a bucket the way docs/audit.md tells outside readers to:
the parts `_manifest.json` lists, through pyarrow's S3FileSystem, as a hive-partitioned
dataset. Prints what it found as JSON (the Rust test compares it with what it wrote).

    python read_audit_s3.py ENDPOINT BUCKET PREFIX
"""

import json
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

endpoint, bucket, prefix = sys.argv[1:4]
scheme, host = endpoint.split("://", 1)
s3 = pafs.S3FileSystem(
    endpoint_override=host,
    scheme=scheme,
    access_key="test",
    secret_key="test",
    region="us-east-1",
)
with s3.open_input_stream(f"{bucket}/{prefix}/_manifest.json") as f:
    manifest = json.loads(f.read())
paths = [f"{bucket}/{p['key']}" for p in manifest["parts"]]
dataset = ds.dataset(
    paths,
    filesystem=s3,
    format="parquet",
    partitioning=ds.partitioning(flavor="hive"),
    partition_base_dir=f"{bucket}/{prefix}",
)
table = dataset.to_table()
schema = {f.name: str(f.type) for f in table.schema}
days = pc.strftime(table["timestamp"], format="%Y-%m-%d")
wrong = pc.sum(pc.not_equal(pc.cast(table["date"], "string"), days)).as_py() or 0
decisions = {}
for d in table["decision"].to_pylist():
    decisions[d] = decisions.get(d, 0) + 1
print(
    json.dumps(
        {
            "manifest_parts": len(manifest["parts"]),
            "rows": table.num_rows,
            "distinct_record_ids": len(set(table["record_id"].to_pylist())),
            "by_decision": decisions,
            "rows_in_wrong_partition": wrong,
            "schema": schema,
        }
    )
)
