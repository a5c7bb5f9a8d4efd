//! The composition root: every long-lived part of a `retryguard serve` process is built here,
//! once — the queue backend, the policy registry, the retry service, the idempotency guard,
//! the audit reader, the analyses, the retry-all operations and (in `background`) the audit
//! writer and the outcome tracker. The API gets its handlers' substates from an [`App`];
//! nothing below it opens a connection of its own.

pub mod background;
pub mod operations;

use std::sync::Arc;

use crate::analytics::Analytics;
use crate::audit::{AuditReader, AuditStore};
use crate::config::Config;
use crate::guard::Guard;
use crate::policy::{Policy, PolicyEngine};
use crate::queue::QueueError;
use crate::queue::rq::RqBackend;
use crate::registry::{Registry, RegistryError, Store};
use crate::retry::{RetryService, ServiceConfig};

pub use background::Background;
pub use operations::Operations;

/// The retry service over RQ: the one `serve` runs.
pub type Service = RetryService<RqBackend>;

/// The parts of one process, each shared by `Arc` (or cheap to clone).
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub service: Arc<Service>,
    /// The queue adapter (the service's own, shared): Redis status for `/readyz`.
    pub backend: RqBackend,
    pub guard: Arc<Guard>,
    pub audit: AuditReader,
    pub analytics: Arc<Analytics>,
    /// The retry-all operations: those this process runs, and every instance's through
    /// their records in Redis.
    pub operations: Arc<Operations>,
    /// What this process's auto-retry sweeper is doing (`background` runs it).
    pub sweeper: Arc<crate::retry::sweeper::SweeperStatus>,
}

impl App {
    /// Connects to the configured Redis and builds the service over the policy registry
    /// there: `policy` is the built-in default, and with the `[retry]` params (checked by the
    /// caller with `PolicyEngine::validate_params`) it seeds the `*` binding when Redis has
    /// none yet. A difference between `[retry]` and the stored `*` binding is logged.
    pub async fn connect(
        config: Arc<Config>,
        engine: Arc<PolicyEngine>,
        policy: Arc<Policy>,
    ) -> Result<Self, QueueError> {
        let backend = RqBackend::connect_with(&config.redis).await?;
        let conn = backend.connection();
        let registry = Arc::new(Registry::new(
            Store::new(conn.clone()),
            Arc::clone(&engine),
            Arc::clone(&policy),
            config.retry.params(),
        ));
        match registry
            .start(&config.retry.params(), crate::clock::now_ms())
            .await
        {
            Ok(Some(warning)) => tracing::warn!("{warning}"),
            Ok(None) => {}
            Err(RegistryError::Redis(e)) => return Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, "the policy bindings in Redis did not load; the built-in default judges every job until they do")
            }
        }
        let service = RetryService::new(
            backend,
            conn,
            engine,
            policy,
            config.retry.params(),
            ServiceConfig::default(),
        )
        .with_registry(registry);
        Ok(Self::new(Arc::new(service), config))
    }

    /// The parts around an already built service (tests build theirs), without an audit
    /// directory until [`App::with_audit_dir`].
    pub fn new(service: Arc<Service>, config: Arc<Config>) -> Self {
        let backend = service.backend().clone();
        let conn = backend.connection();
        let audit = AuditReader::new(conn.clone(), None, max_lag_ms(&config));
        Self {
            operations: Arc::new(Operations::new(
                config.server.max_concurrent_retry_all,
                operations::OperationStore::new(conn.clone()),
            )),
            guard: Arc::new(Guard::new(conn, config.guard)),
            analytics: Arc::new(Analytics::new(audit.clone(), Arc::clone(service.engine()))),
            sweeper: Arc::default(),
            audit,
            backend,
            service,
            config,
        }
    }

    /// The same parts, with the audit trail in `dir` readable.
    pub fn with_audit_dir(mut self, dir: Arc<AuditStore>) -> Self {
        self.audit = AuditReader::new(
            self.backend.connection(),
            Some(dir),
            max_lag_ms(&self.config),
        );
        self.analytics = Arc::new(Analytics::new(
            self.audit.clone(),
            Arc::clone(self.service.engine()),
        ));
        self
    }

    /// The policy registry (every `serve` has one; a service built on a fixed policy, in
    /// tests, has none).
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.service.registry()
    }
}

fn max_lag_ms(config: &Config) -> u64 {
    config.audit.max_lag_seconds.saturating_mul(1000)
}
