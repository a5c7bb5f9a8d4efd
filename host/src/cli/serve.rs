//! `retryguard serve [--config PATH] [--check-config]`: plain HTTP, or HTTPS with `[tls]`
//! (`https`); tokens and the certificate reload without a restart (`reload`).

mod https;
mod reload;

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
    /// Validate the configuration (and the [retry] params against the default policy, and
    /// the [tls] certificate and key), then exit: 0 valid, 1 invalid. Reads the `*` binding
    /// from Redis, if reachable, to say whether [retry] differs from it; writes nothing.
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
    let certs = if config.tls.enabled() {
        match https::CertResolver::load(&config.tls) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                eprintln!("error: invalid configuration ({shown_source}): {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        None
    };
    if args.check_config {
        println!("configuration is valid ({shown_source})");
        println!("  redis:  {}", redact_url(&config.redis.url));
        println!(
            "  listen: {}{}",
            config.server.listen,
            if certs.is_some() { " (https)" } else { "" }
        );
        check_retry_against_redis(&config);
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
    let server = Server {
        config: Arc::new(config),
        config_arg: args.config,
        certs,
    };
    runtime.block_on(serve(server, engine, policy))
}

/// What `serve` runs with besides the policy engine.
struct Server {
    config: Arc<Config>,
    /// `--config` as given: the reloader reads the configuration the same way.
    config_arg: Option<PathBuf>,
    /// `[tls]`'s certificate, when it serves HTTPS.
    certs: Option<Arc<https::CertResolver>>,
}

/// `--check-config`: says whether `[retry]` differs from the `*` binding stored in Redis
/// (which is what every instance uses). Reads only; an unreachable Redis is a note, not an
/// error, since the check is of the configuration.
fn check_retry_against_redis(config: &Config) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("  note: could not compare [retry] with Redis: {e}");
            return;
        }
    };
    let stored = runtime.block_on(async {
        let t = config.redis_timeouts();
        let read = async {
            let backend = crate::queue::rq::RqBackend::connect_with(&config.redis)
                .await
                .map_err(|e| e.to_string())?;
            let snapshot = crate::registry::Store::new(backend.connection())
                .bindings()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                snapshot
                    .bindings
                    .into_iter()
                    .find(|b| b.pattern == "*")
                    .map(|b| b.spec.active.params),
            )
        };
        tokio::time::timeout((t.connect + t.response) * 2, read)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    });
    match stored {
        Ok(Some(stored)) => match retry_drift(&stored, &config.retry.params()) {
            Some(w) => println!("  warning: {w}"),
            None => println!("  retry:  [retry] matches the `*` binding in Redis"),
        },
        Ok(None) => {
            println!("  retry:  Redis has no `*` binding yet: [retry] seeds it at the first start")
        }
        Err(e) => println!(
            "  note: could not compare [retry] with the `*` binding in Redis ({}): {e}",
            redact_url(&config.redis.url)
        ),
    }
}

/// The warning when the `*` binding's params (what every instance uses) are not `[retry]`'s.
fn retry_drift(
    stored: &crate::policy::Params,
    configured: &crate::policy::Params,
) -> Option<String> {
    let (mut a, mut b) = (stored.clone(), configured.clone());
    a.sort();
    b.sort();
    let show = |p: &crate::policy::Params| {
        let items: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if items.is_empty() {
            "(none: the policy's defaults)".to_string()
        } else {
            items.join(" ")
        }
    };
    (a != b).then(|| {
        format!(
            "[retry] differs from the `*` binding in Redis, which every instance uses: Redis has \
             {}, the config says {} (change the binding with `retryguard policy bind '*' \
             --policy <digest> --param k=v`, or make [retry] match)",
            show(&a),
            show(&b)
        )
    })
}

/// The banner's Redis line: the URL (password hidden), the server reached now (with Sentinel,
/// the primary the sentinels named), TLS, and the `WAIT` after each requeue.
fn redis_summary(redis: &config::RedisConfig, connected: &str) -> String {
    let mut line = redact_url(&redis.url);
    if !redis.sentinels.is_empty() {
        line = format!(
            "{line} via sentinels {} (master {:?})",
            redis.sentinels.join(","),
            redis.master_name
        );
    }
    line.push_str(&format!(", connected to {connected}"));
    if redis.is_tls() {
        line.push_str(if redis.danger_accept_invalid_certs {
            ", TLS NOT VERIFIED (danger_accept_invalid_certs)"
        } else if !redis.cert_file.is_empty() {
            ", TLS with a client certificate"
        } else {
            ", TLS"
        });
    }
    let n = redis.replicas_to_wait_for();
    if n > 0 {
        line.push_str(&format!(
            ", each requeue waits for {n} replica{} (WAIT, {} ms)",
            if n == 1 { "" } else { "s" },
            redis.wait_timeout_ms
        ));
    }
    line
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
    server: Server,
    engine: Arc<PolicyEngine>,
    policy: Arc<crate::policy::Policy>,
) -> anyhow::Result<ExitCode> {
    let Server {
        config,
        config_arg,
        certs,
    } = server;
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
    let tls = match &certs {
        Some(certs) => match certs.server_config() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
        None => None,
    };
    // Registered before the banner: from then on a SIGHUP reloads, never kills.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let reloader = reload::Reloader {
        config_arg,
        started: Arc::clone(&config),
        auth: Arc::clone(&state.auth),
        certs: certs.clone(),
    };
    tokio::spawn(reloader.run(hangup, stop_watch.subscribe()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("retryguard listening on {scheme}://{addr}");
    if let Some(certs) = &certs {
        let [cert, key] = certs.files();
        println!("  tls:    {cert}, {key} (read again when they change, and on SIGHUP)");
    }
    println!(
        "  redis:  {}",
        redis_summary(&config.redis, &state.backend.connection().describe())
    );
    let table = state.service.table();
    println!(
        "  policy: bindings revision {} (`*` -> {}; built-in default {})",
        table.revision,
        table.default_binding().active.policy.digest(),
        policy.digest()
    );
    if let Some(w) = retry_drift(
        &table.default_binding().active.params,
        &config.retry.params(),
    ) {
        println!("  warning: {w}");
    }
    println!(
        "  audit:  {}{}",
        background.dir.describe(),
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
    let app = crate::ui::app(state);
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        stop_operations.cancel_all();
    };
    match tls {
        Some(tls) => {
            axum::serve(https::TlsListener::new(listener, tls), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
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
