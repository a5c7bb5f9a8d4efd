#!/usr/bin/env python3
"""Reads a retryguard audit directory the way an analyst would, with pyarrow and DuckDB, and
prints what it found as JSON (the Rust test compares it with retryguard's own answers).

    python read_audit.py AUDIT_DIR
"""

import json
import sys

import duckdb
import pyarrow.dataset as ds

root = sys.argv[1]

# pyarrow: the hive partitioning gives the `date` column; dot-directories (.staging) are
# ignored by default.
dataset = ds.dataset(root, format="parquet", partitioning="hive", exclude_invalid_files=False)
table = dataset.to_table()
schema = {f.name: str(f.type) for f in table.schema}

con = duckdb.connect()
glob = f"{root}/date=*/*.parquet"
count = con.execute(f"select count(*) from read_parquet('{glob}', hive_partitioning=true)").fetchone()[0]
by_decision = dict(
    con.execute(
        f"select decision, count(*) from read_parquet('{glob}', hive_partitioning=true) group by decision"
    ).fetchall()
)
distinct_ids = con.execute(
    f"select count(distinct record_id) from read_parquet('{glob}', hive_partitioning=true)"
).fetchone()[0]
dates_ok = con.execute(
    f"select count(*) from read_parquet('{glob}', hive_partitioning=true) "
    "where cast(date as varchar) <> strftime(make_timestamp(epoch_us(timestamp)), '%Y-%m-%d')"
).fetchone()[0]
print(
    json.dumps(
        {
            "pyarrow_rows": table.num_rows,
            "schema": schema,
            "duckdb_count": count,
            "by_decision": by_decision,
            "distinct_record_ids": distinct_ids,
            "rows_in_wrong_partition": dates_ok,
        }
    )
)
