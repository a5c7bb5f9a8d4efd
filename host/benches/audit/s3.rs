//! Section 4, the bucket: the same write and query measures against an S3 server on this machine
//! (moto's server from the test venv, `.venv-test`; skipped when it is not installed).
//! moto is a Python server, so its figures are an upper bound on a local round trip's cost,
//! not S3's: a real bucket adds network latency per request.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use retryguard::audit::{AuditStore, AuditWriter, StoreUrl, WriterConfig, WriterStatus};
use retryguard::redis_link::Link;

use super::redis_server::RedisServer;
use super::{Args, Report, fill_outbox, ms, percentile, run_queries, write_query_set};

/// moto's server, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
    python: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Option<Self> {
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-test/bin/python");
        let has_moto = Command::new(&python)
            .args(["-c", "import moto.server"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_moto {
            return None;
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let moto = Self {
            child,
            port,
            python,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let made = Command::new(&moto.python)
            .args([
                "-c",
                &format!(
                    "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', \
                     aws_access_key_id='b', aws_secret_access_key='b', region_name='us-east-1')\
                     .create_bucket(Bucket='bench')"
                ),
            ])
            .status()
            .is_ok_and(|s| s.success());
        made.then_some(moto)
    }

    async fn open(&self, prefix: &str) -> Arc<AuditStore> {
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        let options = [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "b"),
            ("aws_secret_access_key", "b"),
            ("aws_region", "us-east-1"),
        ];
        let url = StoreUrl::Object(format!("s3://bench/{prefix}"));
        Arc::new(
            AuditStore::open_with(&url, Duration::from_secs(30), &options)
                .await
                .expect("the bucket opens"),
        )
    }
}

/// What section 4 measured.
#[derive(Debug, Default, Clone)]
pub(super) struct BucketFigures {
    pub write_rate: f64,
    pub write_bytes: f64,
    pub job_p50_ms: f64,
    pub job_p99_ms: f64,
    pub files: usize,
    pub query_bytes: f64,
}

pub(super) async fn bucket(args: &Args, server: &RedisServer, mut conn: Link, report: &mut Report) {
    let Some(moto) = Moto::start() else {
        println!(
            "\n4. the bucket: skipped (moto's server is not in .venv-test; scripts/test.sh installs it)"
        );
        return;
    };
    let n = args.records;
    println!(
        "\n4. the bucket (moto's S3 server on 127.0.0.1:{}): {n} records written, batch {}",
        moto.port, args.batch
    );
    let mut sync = redis::Client::open(server.url())
        .expect("a client")
        .get_connection()
        .expect("connects");
    fill_outbox(&mut sync, n, 0x5eed_0004);
    let store = moto.open("write").await;
    let config = WriterConfig {
        batch_size: args.batch,
        ..WriterConfig::default()
    };
    let status = Arc::new(WriterStatus::default());
    let mut writer = AuditWriter::new(conn.clone(), Arc::clone(&store), config, status.clone());
    let started = Instant::now();
    while writer.flush_now().await.expect("flush_now") > 0 {}
    let total_s = started.elapsed().as_secs_f64();
    let written = status
        .records_written
        .load(std::sync::atomic::Ordering::Relaxed);
    report.check(
        written == n as u64,
        format!("the bucket writer wrote {written} of {n}"),
    );
    let bytes = tokio::task::block_in_place(|| store.size_bytes()).expect("size");
    let mut figures = BucketFigures {
        write_rate: n as f64 / total_s,
        write_bytes: bytes as f64 / n as f64,
        ..BucketFigures::default()
    };
    println!(
        "  writer drained {n} records into the bucket in {total_s:.3} s = {:.0} records/s, {:.1} bytes/record",
        figures.write_rate, figures.write_bytes
    );

    println!(
        "  query set: {} records over {} days, {}-record parts, then compacted",
        args.query_records, args.days, args.part_rows
    );
    let store = moto.open("query").await;
    let started = Instant::now();
    let ids = tokio::task::block_in_place(|| {
        // The writer's view of the bucket (its manifest is built from it).
        store.written().expect("lists");
        let ids = write_query_set(args, &store, report);
        store.publish().expect("manifest");
        for date in store.dates().expect("dates") {
            store.compact(&date).expect("compact");
        }
        ids
    });
    let parts = tokio::task::block_in_place(|| store.parts()).expect("parts");
    let bytes = tokio::task::block_in_place(|| store.size_bytes()).expect("size");
    println!(
        "  wrote and compacted into {} parts in {:.1} s",
        parts.len(),
        started.elapsed().as_secs_f64()
    );
    let lat = run_queries(&mut conn, &store, &ids, args.query_records, report).await;
    lat.print("bucket");
    figures.job_p50_ms = ms(percentile(&lat.job, 0.5));
    figures.job_p99_ms = ms(percentile(&lat.job, 0.99));
    figures.files = parts.len();
    figures.query_bytes = bytes as f64 / args.query_records as f64;
    report.bucket = Some(figures);
}
