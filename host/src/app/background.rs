//! The background work of one process: the audit writer (when `[audit] writer`), the
//! outcome tracker, the failure index's reconciler (when `[triage] reconciler`) and the
//! auto-retry sweeper (when `[auto_retry] enabled`), each over its own Redis connection,
//! stopped together.

use std::sync::Arc;
use std::time::Duration;

use crate::redis_link::Link;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{AuditStore, AuditWriter, WriterStatus};
use crate::config::Config;
use crate::retry::sweeper::Sweeper;
use crate::retry::tracker;
use crate::triage::{Reconciler, ReconcilerStatus};

/// How often the outcome tracker looks at requeued jobs.
const TRACK_EVERY: Duration = Duration::from_secs(1);

/// How long a graceful stop keeps flushing the outbox.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Running background tasks; `stop` flushes and waits for them.
#[derive(Debug)]
pub struct Background {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub dir: Arc<AuditStore>,
    pub status: Arc<WriterStatus>,
    /// What this instance's reconciler is doing (whether it holds the lease, its passes).
    pub triage: Arc<ReconcilerStatus>,
}

impl Background {
    /// Opens the audit store and starts the tasks. A directory that cannot be created or a
    /// bucket that cannot be read is an error here (start-up), while write errors later
    /// only degrade the audit.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let dir = Arc::new(open_store(&config.audit).await?);
        let (shutdown, rx) = watch::channel(false);
        let status = Arc::new(WriterStatus::default());
        let mut tasks = Vec::new();
        let writer_config = config.audit.writer_config();
        if config.audit.writer {
            // Its reads block for up to the flush interval: a connection of its own.
            let conn = connect(config, writer_config.flush_interval).await?;
            let writer = AuditWriter::new(conn, dir.clone(), writer_config, status.clone());
            tasks.push(tokio::spawn(writer.run(rx.clone(), DRAIN_TIMEOUT)));
        }
        drop(rx);
        Ok(Self {
            shutdown,
            tasks,
            dir,
            status,
            triage: Arc::default(),
        })
    }

    /// Starts the work over `app`'s service: the outcome tracker (feeding the bindings'
    /// breakers and budgets), the failure index's reconciler when `[triage] reconciler`, and
    /// the auto-retry sweeper when `[auto_retry] enabled` (one instance at a time works on
    /// the index and one on the sweep; the others stand by).
    pub async fn start_workers(
        &mut self,
        config: &Config,
        app: &crate::app::App,
    ) -> anyhow::Result<()> {
        let service = Arc::clone(&app.service);
        let conn = connect(config, Duration::ZERO).await?;
        let tables: tracker::Tables = {
            let service = Arc::clone(&service);
            Arc::new(move || service.table())
        };
        self.tasks.push(tokio::spawn(tracker::run(
            conn,
            TRACK_EVERY,
            self.shutdown.subscribe(),
            Some(tables),
        )));
        if config.auto_retry.enabled {
            let conn = connect(config, Duration::ZERO).await?;
            let sweeper = Sweeper::new(
                Arc::clone(&service),
                conn,
                config.auto_retry.sweeper_config(),
                Arc::clone(&app.sweeper),
                app.operations.instance(),
            );
            self.tasks
                .push(tokio::spawn(sweeper.run(self.shutdown.subscribe())));
        }
        if !config.triage.reconciler {
            return Ok(());
        }
        let conn = connect(config, Duration::ZERO).await?;
        let reconciler = Reconciler::new(
            service,
            conn,
            config.triage.reconciler_config(),
            Arc::clone(&self.triage),
        );
        self.tasks
            .push(tokio::spawn(reconciler.run(self.shutdown.subscribe())));
        Ok(())
    }

    /// Stops the tasks; the writer first flushes what the outbox holds.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn connect(config: &Config, extra: Duration) -> anyhow::Result<Link> {
    Ok(Link::connect(&config.redis, extra).await?)
}

/// Opens `[audit] url` (or `path`), naming the setting in the error.
pub async fn open_store(audit: &crate::config::AuditConfig) -> anyhow::Result<AuditStore> {
    let url = audit.store_url().map_err(|e| anyhow::anyhow!(e))?;
    AuditStore::open(&url, audit.store_request_timeout())
        .await
        .map_err(|e| {
            let setting = match url {
                crate::audit::StoreUrl::Local(path) => format!(
                    "the audit directory {} ([audit] path or url, RETRYGUARD_AUDIT_DIR or RETRYGUARD_AUDIT_URL)",
                    path.display()
                ),
                crate::audit::StoreUrl::Object(url) => format!(
                    "the audit store {url} ([audit] url, RETRYGUARD_AUDIT_URL; credentials and endpoint from AWS_*, GOOGLE_* or AZURE_*)"
                ),
            };
            anyhow::anyhow!("cannot use {setting}: {e}")
        })
}
