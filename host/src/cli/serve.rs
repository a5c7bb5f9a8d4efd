//! `retryguard serve [--config PATH] [--check-config]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::api::{self, AppState};
use crate::app::{App, Background};
use crate::config::{self, Config, redact_url};
use crate::policy::{EngineConfig, LoadOptions, PolicyEngine, builtin};

/// How long shutdown waits for running retry-all operations to stop after their batch.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file (TOML). Default: ./retryguard.toml when it exists. Environment
    /// variables RETRYGUARD_<SECTION>_<KEY> override it.
    #[arg(long, env = "RETRYGUARD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration (and the [retry] params against the default policy),
    /// then exit: 0 valid, 1 invalid. Connects to nothing.
    #[arg(long)]
    check_config: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let source = args.config.clone().or_else(|| {
        Path::new(config::DEFAULT_PATH)
            .is_file()
            .then(|| PathBuf::from(config::DEFAULT_PATH))
    });
    let shown_source = source.as_ref().map_or_else(
        || "defaults and RETRYGUARD_* environment".to_string(),
        |p| format!("{} and RETRYGUARD_* environment", p.display()),
    );
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration ({shown_source}): {e}");
            return Ok(ExitCode::FAILURE);
        }
    };

    let mut engine = PolicyEngine::new(EngineConfig::default())?;
    let cache_warning = config.policy_cache_dir().and_then(|dir| {
        if args.check_config {
            return None;
        }
        engine.set_artifact_cache(&dir).err().map(|e| {
            format!(
                "{e}; every start compiles every policy ({} = \"\" turns the cache off \
                 and this warning with it)",
                config::env_var("policy", "cache_dir")
            )
        })
    });
    let engine = Arc::new(engine);
    let options = LoadOptions {
        limits: config.policy_limits(),
        allow_wasi: false,
    };
    let policy = engine
        .load(builtin::DEFAULT_POLICY, &options)
        .context("the built-in default policy did not load with the [policy] limits")?;
    match engine.validate_params(&policy, &config.retry.params()) {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            eprintln!(
                "error: invalid configuration ({shown_source}): [retry] is refused by the \
                 default policy: {message}"
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => anyhow::bail!("the default policy could not check the [retry] params: {e}"),
    }
    if args.check_config {
        println!("configuration is valid ({shown_source})");
        println!("  redis:  {}", redact_url(&config.redis.url));
        println!("  listen: {}", config.server.listen);
        return Ok(ExitCode::SUCCESS);
    }

    init_logging();
    if let Some(warning) = cache_warning {
        tracing::warn!("{warning}");
    }
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Policy evaluations and file I/O run on the blocking pool; more threads than this
        // only wait for the engine's own limit, and each costs memory.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(Arc::new(config), engine, policy))
}

/// Threads of the runtime's blocking pool.
const BLOCKING_THREADS: usize = 16;

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), and
/// memory freed in one is not reused by another: under 50 concurrent listings `serve`'s RSS
/// grew to 200+ MB of mostly free arena space. Two arenas keep the peak near what is in use
/// (docs/triage.md has the figures).
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How often each instance compares its bindings revision with Redis's (announcements make
/// changes live at once; this catches one missed).
const REVISION_CHECK: Duration = Duration::from_secs(2);

async fn serve(
    config: Arc<Config>,
    engine: Arc<PolicyEngine>,
    policy: Arc<crate::policy::Policy>,
) -> anyhow::Result<ExitCode> {
    let redis_url = redact_url(&config.redis.url);
    let app = match App::connect(
        Arc::clone(&config),
        Arc::clone(&engine),
        Arc::clone(&policy),
    )
    .await
    {
        Ok(app) => app,
        Err(e) => {
            eprintln!(
                "error: cannot use Redis at {redis_url} ([redis] url, or {}): {e}\n  \
                 check that Redis is running and reachable from here, and the URL's host, \
                 port, database number and password",
                config::env_var("redis", "url")
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut background = match Background::start(&config).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Err(e) = background.start_workers(&config, &app).await {
        eprintln!("error: the background workers (tracker, reconciler, sweeper): {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    let state = AppState::from_app(app.with_audit_dir(Arc::clone(&background.dir)));
    // Binding changes from any instance: announced on pub/sub, and a revision check every
    // REVISION_CHECK covers a missed announcement or a dropped subscription.
    let (stop_watch, watch_stopped) = tokio::sync::watch::channel(false);
    if let Some(registry) = state.service.registry() {
        tokio::spawn(Arc::clone(registry).watch(REVISION_CHECK, watch_stopped));
        // The bound policies are compiled already (the table is built); the others now, off
        // the request path, so binding any of them later is instant here too.
        let registry = Arc::clone(registry);
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let compiled = registry.warm().await;
            let cache = engine.artifact_cache_counts();
            tracing::info!(
                compiled,
                elapsed_ms = started.elapsed().as_millis() as u64,
                cache_hits = cache.map(|c| c.hits),
                cache_misses = cache.map(|c| c.misses),
                "stored policies ready"
            );
        });
    }
    let addr = config.listen_addr()?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {addr} ([server] listen, or RETRYGUARD_LISTEN): {e}"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("retryguard listening on http://{addr}");
    println!("  redis:  {redis_url}");
    let table = state.service.table();
    println!(
        "  policy: bindings revision {} (`*` -> {}; built-in default {})",
        table.revision,
        table.default_binding().active.policy.digest(),
        policy.digest()
    );
    println!(
        "  audit:  {}{}",
        background.dir.root().display(),
        if config.audit.writer {
            ""
        } else {
            " (writer off in this instance)"
        }
    );
    match state.backend.redis_status().await {
        Ok(status) => {
            for w in api::health::durability_warnings(&status) {
                println!("  warning: {w}");
                tracing::warn!(warning = %w, "redis durability");
            }
        }
        Err(e) => println!("  warning: could not read Redis's durability settings: {e}"),
    }
    tracing::info!(%addr, redis = %redis_url, policy = %policy.digest(), "listening");

    let operations = Arc::clone(&state.operations);
    let stop_operations = Arc::clone(&operations);
    axum::serve(listener, crate::ui::app(state))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            stop_operations.cancel_all();
        })
        .await
        .context("the HTTP server failed")?;
    if !operations.drain(DRAIN_TIMEOUT).await {
        tracing::warn!("retry-all operations still running after {DRAIN_TIMEOUT:?}; exiting");
    }
    let _ = stop_watch.send(true);
    // Last: the operations above may still have appended records.
    tracing::info!("flushing the audit outbox");
    background.stop().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// JSON logs on stderr; `RETRYGUARD_LOG` filters them (default `info`).
pub(super) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RETRYGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    let terminate = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
