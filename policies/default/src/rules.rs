//! The classification tables: which exception types and message phrases mean which failure
//! type. All `static`, and the indexes over them (`index.rs`) are computed by the compiler,
//! so a fresh wasm instance pays nothing to build them.
//!
//! How [`crate::classify()`] uses them (only the outermost exception is looked at):
//!
//! 1. [`INTERRUPTED_TYPES`]: the job was interrupted mid-run → `unknown`.
//! 2. [`TYPE_RULES`], then [`MESSAGE_RULES`], then [`HTTP_STATUS_RULES`] (only when the
//!    failure looks like an HTTP one, see [`HTTP_CONTEXT_TYPES`] and [`HTTP_CONTEXT_PHRASES`]).
//!    The first hit of each retryability is kept, so within a retryability a type match ranks
//!    above a message match, and earlier rows above later ones. When both a non-retryable and
//!    a retryable rule match, **non-retryable wins**: a person looks, rather than a job being
//!    retried that will never pass.
//! 3. Nothing matched → `unknown`.
//!
//! Type names are compared ASCII-case-insensitively: a name without a dot against the last
//! component of the printed type (`ConnectionError` matches `requests.exceptions.
//! ConnectionError` and `redis.exceptions.ConnectionError`), a dotted name against the whole
//! printed type (none is needed yet). Message phrases are lower case and are looked for, ASCII
//! case ignored, at the start of a word of the message.

use FailureType::*;
use core::fmt;

/// The failure types the default policy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureType {
    /// The network failed: refused, reset, DNS, TLS cut short… (retryable)
    NetworkError,
    /// Something took too long, including RQ's job timeout. (retryable)
    Timeout,
    /// A service asked us to slow down (HTTP 429 and friends). (retryable)
    RateLimit,
    /// A database lock, deadlock or serialization conflict. (retryable)
    DatabaseLock,
    /// A service is briefly unavailable (HTTP 502/503, Redis loading, failover, an
    /// idempotency key held by another run). (retryable)
    TemporaryError,
    /// The job's input is invalid. (not retryable)
    ValidationError,
    /// A bug in the job's code. (not retryable)
    LogicError,
    /// What the job works on does not exist. (not retryable)
    DataNotFound,
    /// The job is not allowed to do what it tried. (not retryable)
    PermissionError,
    /// The deployment is misconfigured (settings, imports, schema). (not retryable)
    ConfigurationError,
    /// Nothing recognised, or the job was interrupted and its side effects are unknown.
    /// Not retryable unless the binding sets `retry_unknown`.
    Unknown,
}

impl FailureType {
    /// Every failure type, retryable ones first.
    pub const ALL: [FailureType; 11] = [
        Self::NetworkError,
        Self::Timeout,
        Self::RateLimit,
        Self::DatabaseLock,
        Self::TemporaryError,
        Self::ValidationError,
        Self::LogicError,
        Self::DataNotFound,
        Self::PermissionError,
        Self::ConfigurationError,
        Self::Unknown,
    ];

    /// The contract's name for it, e.g. `network_error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NetworkError => "network_error",
            Self::Timeout => "timeout",
            Self::RateLimit => "rate_limit",
            Self::DatabaseLock => "database_lock",
            Self::TemporaryError => "temporary_error",
            Self::ValidationError => "validation_error",
            Self::LogicError => "logic_error",
            Self::DataNotFound => "data_not_found",
            Self::PermissionError => "permission_error",
            Self::ConfigurationError => "configuration_error",
            Self::Unknown => "unknown",
        }
    }

    /// Whether a failure of this type can succeed on a later attempt.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::NetworkError
                | Self::Timeout
                | Self::RateLimit
                | Self::DatabaseLock
                | Self::TemporaryError
        )
    }
}

impl fmt::Display for FailureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule on the exception's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeRule {
    /// A class name (matched against the last component) or a dotted name (matched whole).
    pub name: &'static str,
    /// What a match means.
    pub failure_type: FailureType,
}

/// A rule on the exception's message: a lower-case phrase looked for anywhere in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRule {
    /// The lower-case phrase.
    pub phrase: &'static str,
    /// What a match means.
    pub failure_type: FailureType,
}

/// A rule on an HTTP status code appearing as a standalone token in an HTTP failure's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRule {
    /// The three digits.
    pub code: &'static str,
    /// What a match means.
    pub failure_type: FailureType,
}

const fn t(name: &'static str, failure_type: FailureType) -> TypeRule {
    TypeRule { name, failure_type }
}

const fn m(phrase: &'static str, failure_type: FailureType) -> MessageRule {
    MessageRule {
        phrase,
        failure_type,
    }
}

const fn s(code: &'static str, failure_type: FailureType) -> StatusRule {
    StatusRule { code, failure_type }
}

/// Exception types meaning the job was interrupted while it ran (RQ's abandoned-job and
/// shutdown exceptions, a signal, a cancelled task): it may have partly run and its side
/// effects are unknown, so these are `unknown` whatever their message says.
pub static INTERRUPTED_TYPES: &[&str] = INTERRUPTED_TYPE_TABLE;

/// The rows of [`INTERRUPTED_TYPES`] as a `const`, for the compile-time indexes (`index.rs`).
pub(crate) const INTERRUPTED_TYPE_TABLE: &[&str] = &[
    "AbandonedJobError",         // rq.exceptions: the worker vanished mid-job
    "ShutDownImminentException", // rq.exceptions: warm shutdown ran out of time
    "KeyboardInterrupt",         // SIGINT
    "SystemExit",                // sys.exit() / SIGTERM handlers
    "CancelledError",            // asyncio / concurrent.futures
];

/// RQ's failure texts that carry no Python exception, with what each means. Looked for
/// (case-sensitively, as RQ writes them) only when no exception could be parsed.
pub static RQ_NO_EXCEPTION_TEXTS: &[(&str, &str)] = &[
    (
        "Work-horse terminated unexpectedly",
        "RQ's work-horse terminated unexpectedly (killed by a signal, e.g. the OOM killer): \
         the job may have partly run and its side effects are unknown",
    ),
    (
        "due to AbandonedJobError",
        "RQ moved the job to the failed registry as abandoned (its worker disappeared \
         mid-job): the job may have partly run and its side effects are unknown",
    ),
    (
        "Job stopped by user",
        "the job was stopped on purpose while it ran: it may have partly run and its side \
         effects are unknown",
    ),
    (
        "stuck in intermediate queue",
        "RQ found the job stuck in its intermediate queue (its worker died around dequeue): \
         the job may have partly run and its side effects are unknown",
    ),
];

/// Exception types, in priority order within each retryability.
pub static TYPE_RULES: &[TypeRule] = TYPE_RULE_TABLE;

/// The rows of [`TYPE_RULES`] as a `const`, for the compile-time indexes (`index.rs`).
pub(crate) const TYPE_RULE_TABLE: &[TypeRule] = &[
    // --- timeout -------------------------------------------------------------------------
    t("TimeoutError", Timeout), // builtin (= socket.timeout), asyncio, redis, urllib3, sqlalchemy pool
    t("JobTimeoutException", Timeout), // rq.timeouts: the job ran past its job_timeout
    t("Timeout", Timeout),      // requests.exceptions.Timeout, socket.timeout (Python < 3.10)
    t("ConnectTimeout", Timeout), // requests, httpx
    t("ReadTimeout", Timeout),  // requests, httpx
    t("WriteTimeout", Timeout), // httpx
    t("PoolTimeout", Timeout),  // httpx
    t("TimeoutException", Timeout), // httpx base
    t("ConnectTimeoutError", Timeout), // urllib3, botocore
    t("ReadTimeoutError", Timeout), // urllib3, botocore
    t("ServerTimeoutError", Timeout), // aiohttp
    t("ConnectionTimeoutError", Timeout), // aiohttp
    t("SocketTimeoutError", Timeout), // aiohttp
    t("ServerSelectionTimeoutError", Timeout), // pymongo
    t("NetworkTimeout", Timeout), // pymongo
    t("ExecutionTimeout", Timeout), // pymongo
    t("SoftTimeLimitExceeded", Timeout), // celery-style helpers
    // --- network_error -------------------------------------------------------------------
    t("ConnectionError", NetworkError), // builtin, requests, redis
    t("ConnectionRefusedError", NetworkError),
    t("ConnectionResetError", NetworkError),
    t("ConnectionAbortedError", NetworkError),
    t("BrokenPipeError", NetworkError),
    t("gaierror", NetworkError),                // socket.gaierror: DNS
    t("herror", NetworkError),                  // socket.herror
    t("SSLError", NetworkError), // requests, urllib3 (a bad certificate is caught by message)
    t("ProxyError", NetworkError), // requests, httpx, urllib3
    t("ChunkedEncodingError", NetworkError), // requests
    t("ConnectError", NetworkError), // httpx
    t("ReadError", NetworkError), // httpx
    t("WriteError", NetworkError), // httpx
    t("CloseError", NetworkError), // httpx
    t("NetworkError", NetworkError), // httpx
    t("RemoteProtocolError", NetworkError), // httpx
    t("TransportError", NetworkError), // httpx base
    t("NewConnectionError", NetworkError), // urllib3
    t("NameResolutionError", NetworkError), // urllib3
    t("MaxRetryError", NetworkError), // urllib3: retries exhausted talking to a host
    t("ProtocolError", NetworkError), // urllib3: connection aborted mid-response
    t("RemoteDisconnected", NetworkError), // http.client
    t("IncompleteRead", NetworkError), // http.client
    t("ClientConnectionError", NetworkError), // aiohttp
    t("ClientConnectorError", NetworkError), // aiohttp
    t("ClientConnectorDNSError", NetworkError), // aiohttp
    t("ClientOSError", NetworkError), // aiohttp
    t("ServerConnectionError", NetworkError), // aiohttp
    t("ServerDisconnectedError", NetworkError), // aiohttp
    t("ClientPayloadError", NetworkError), // aiohttp
    t("EndpointConnectionError", NetworkError), // botocore
    t("DisconnectionError", NetworkError), // sqlalchemy
    t("ConnectionDoesNotExistError", NetworkError), // asyncpg
    t("AutoReconnect", NetworkError), // pymongo
    t("ConnectionFailure", NetworkError), // pymongo
    t("SMTPServerDisconnected", NetworkError),
    t("SMTPConnectError", NetworkError),
    // --- rate_limit ----------------------------------------------------------------------
    t("TooManyRequests", RateLimit), // werkzeug
    t("RateLimitError", RateLimit),  // SDKs (openai, …)
    t("RateLimitExceeded", RateLimit),
    t("Throttled", RateLimit), // django-rest-framework
    // --- database_lock -------------------------------------------------------------------
    t("LockNotAvailable", DatabaseLock), // psycopg2.errors / psycopg.errors
    t("SerializationFailure", DatabaseLock), // psycopg2.errors / psycopg.errors
    t("DeadlockDetected", DatabaseLock), // psycopg2.errors / psycopg.errors
    t("TransactionRollbackError", DatabaseLock), // psycopg2: base of the two above
    t("LockNotAvailableError", DatabaseLock), // asyncpg
    t("SerializationError", DatabaseLock), // asyncpg
    t("DeadlockDetectedError", DatabaseLock), // asyncpg
    // --- temporary_error -----------------------------------------------------------------
    t("GuardInProgress", TemporaryError), // retryguard's idempotency guard: another run holds the key
    t("BusyLoadingError", TemporaryError), // redis: loading the dataset
    t("ReadOnlyError", TemporaryError),   // redis: writing to a replica during failover
    t("TryAgainError", TemporaryError),   // redis cluster
    t("ClusterDownError", TemporaryError), // redis cluster
    t("MasterDownError", TemporaryError), // redis sentinel
    t("CannotConnectNowError", TemporaryError), // asyncpg: server starting up
    t("ServiceUnavailable", TemporaryError), // werkzeug, google-api-core
    t("ServiceUnavailableError", TemporaryError),
    // --- validation_error ----------------------------------------------------------------
    t("ValueError", ValidationError),
    t("ValidationError", ValidationError), // pydantic, marshmallow, jsonschema, django
    t("JSONDecodeError", ValidationError), // json, requests
    t("UnicodeDecodeError", ValidationError),
    t("UnicodeEncodeError", ValidationError),
    t("UnicodeError", ValidationError),
    t("DataError", ValidationError), // DB-API (bad value for a column), redis (bad argument)
    t("IntegrityError", ValidationError), // DB-API: constraint violated; retrying repeats it
    t("UniqueViolation", ValidationError), // psycopg2.errors
    t("NotNullViolation", ValidationError),
    t("CheckViolation", ValidationError),
    t("ForeignKeyViolation", ValidationError),
    t("InvalidTextRepresentation", ValidationError),
    t("NumericValueOutOfRange", ValidationError),
    t("StringDataRightTruncation", ValidationError),
    t("BadRequest", ValidationError),          // werkzeug
    t("UnprocessableEntity", ValidationError), // werkzeug
    t("ParserError", ValidationError),         // dateutil
    t("ParseError", ValidationError),          // django-rest-framework, xml
    // --- logic_error ---------------------------------------------------------------------
    t("TypeError", LogicError),
    t("AttributeError", LogicError),
    t("NameError", LogicError),
    t("UnboundLocalError", LogicError),
    t("ZeroDivisionError", LogicError),
    t("IndexError", LogicError),
    t("AssertionError", LogicError),
    t("NotImplementedError", LogicError),
    t("RecursionError", LogicError),
    t("SyntaxError", LogicError),
    t("IndentationError", LogicError),
    t("OverflowError", LogicError),
    t("MultipleObjectsReturned", LogicError), // django
    t("MultipleResultsFound", LogicError),    // sqlalchemy
    t("FieldError", LogicError),              // django
    t("FieldDoesNotExist", LogicError),       // django: a model field, not a row
    t("ProgrammingError", LogicError),        // DB-API: bad SQL
    t("InvalidRequestError", LogicError),     // sqlalchemy
    t("ArgumentError", LogicError),           // sqlalchemy
    // --- data_not_found ------------------------------------------------------------------
    t("KeyError", DataNotFound),
    t("ObjectDoesNotExist", DataNotFound), // django
    t("DoesNotExist", DataNotFound),       // django: `app.models.Order.DoesNotExist`
    t("NoResultFound", DataNotFound),      // sqlalchemy
    t("FileNotFoundError", DataNotFound),
    t("Http404", DataNotFound),        // django
    t("NotFound", DataNotFound),       // werkzeug, google-api-core
    t("NotFoundError", DataNotFound),  // SDKs (elasticsearch, openai, …)
    t("NoSuchKey", DataNotFound),      // botocore / S3
    t("NoSuchJobError", DataNotFound), // rq
    // --- permission_error ----------------------------------------------------------------
    t("PermissionError", PermissionError),
    t("PermissionDenied", PermissionError),      // django
    t("AuthenticationError", PermissionError),   // redis, SDKs
    t("AuthorizationError", PermissionError),    // redis
    t("NoPermissionError", PermissionError),     // redis ACL
    t("InsufficientPrivilege", PermissionError), // psycopg2.errors
    t("InvalidPassword", PermissionError),       // psycopg2.errors
    t("Unauthorized", PermissionError),          // werkzeug
    t("Forbidden", PermissionError),             // werkzeug
    t("NotAuthenticated", PermissionError),      // django-rest-framework
    t("AuthenticationFailed", PermissionError),  // django-rest-framework
    // --- configuration_error -------------------------------------------------------------
    t("ImproperlyConfigured", ConfigurationError), // django
    t("ImportError", ConfigurationError),
    t("ModuleNotFoundError", ConfigurationError),
    t("NoSuchModuleError", ConfigurationError), // sqlalchemy: unknown dialect
    t("UndefinedTable", ConfigurationError),    // psycopg2.errors: migrations not run
    t("UndefinedColumn", ConfigurationError),   // psycopg2.errors: migrations not run
    t("InvalidCatalogName", ConfigurationError), // psycopg2.errors: no such database
    t("NoCredentialsError", ConfigurationError), // botocore
];

/// Message phrases (lower case, starting with an ASCII letter or digit), in priority order
/// within each retryability. A phrase matches only at the start of a word.
pub static MESSAGE_RULES: &[MessageRule] = MESSAGE_RULE_TABLE;

/// The rows of [`MESSAGE_RULES`] as a `const`, for the compile-time indexes (`index.rs`).
pub(crate) const MESSAGE_RULE_TABLE: &[MessageRule] = &[
    // --- database_lock (before timeout: "lock wait timeout exceeded") ---------------------
    m("database is locked", DatabaseLock), // sqlite3.OperationalError
    m("database table is locked", DatabaseLock),
    m("deadlock detected", DatabaseLock), // PostgreSQL
    m("deadlock found when trying to get lock", DatabaseLock), // MySQL 1213
    m("lock wait timeout exceeded", DatabaseLock), // MySQL 1205
    m("could not serialize access", DatabaseLock), // PostgreSQL 40001
    m("could not obtain lock", DatabaseLock), // PostgreSQL 55P03 (NOWAIT)
    m("canceling statement due to lock timeout", DatabaseLock), // PostgreSQL lock_timeout
    m("locknotavailable", DatabaseLock),  // wrapped: "(psycopg2.errors.LockNotAvailable) …"
    m("serializationfailure", DatabaseLock),
    m("deadlockdetected", DatabaseLock),
    // --- rate_limit ----------------------------------------------------------------------
    m("too many requests", RateLimit), // HTTP 429's reason phrase
    m("rate limit", RateLimit),
    m("rate-limit", RateLimit),
    m("ratelimit", RateLimit),
    m("throttl", RateLimit),                  // throttled, throttling
    m("reduce your request rate", RateLimit), // S3 SlowDown
    // --- timeout -------------------------------------------------------------------------
    m("timed out", Timeout),
    m("timeout expired", Timeout), // psycopg2 connect_timeout
    m("canceling statement due to statement timeout", Timeout),
    m("deadline exceeded", Timeout),
    m("gateway timeout", Timeout), // HTTP 504
    m("gateway time-out", Timeout),
    // --- network_error -------------------------------------------------------------------
    m("connection refused", NetworkError),
    m("connection reset", NetworkError),
    m("connection aborted", NetworkError),
    m("broken pipe", NetworkError),
    m("network is unreachable", NetworkError),
    m("no route to host", NetworkError),
    m("name or service not known", NetworkError),
    m("temporary failure in name resolution", NetworkError),
    m("nodename nor servname provided", NetworkError),
    m("failed to establish a new connection", NetworkError),
    m("server closed the connection unexpectedly", NetworkError), // PostgreSQL
    m("could not connect to server", NetworkError),
    m("connection already closed", NetworkError),
    m("remote end closed connection", NetworkError),
    m("connection closed by server", NetworkError), // redis
    m("error while reading from socket", NetworkError), // redis
    m("server has gone away", NetworkError),        // MySQL 2006
    m("lost connection to mysql server", NetworkError), // MySQL 2013
    m("can't connect to mysql server", NetworkError), // MySQL 2003
    m("eof occurred in violation of protocol", NetworkError), // TLS cut short
    m("ssl syscall error", NetworkError),
    // --- temporary_error -----------------------------------------------------------------
    m("service unavailable", TemporaryError), // HTTP 503
    m("bad gateway", TemporaryError),         // HTTP 502
    m("temporarily unavailable", TemporaryError),
    m("try again later", TemporaryError),
    m("redis is loading the dataset in memory", TemporaryError), // LOADING
    m(
        "you can't write against a read only replica",
        TemporaryError,
    ), // READONLY
    m("masterdown", TemporaryError),
    m("clusterdown", TemporaryError),
    m("tryagain", TemporaryError),
    m("the database system is starting up", TemporaryError),
    m("the database system is shutting down", TemporaryError),
    m("the database system is in recovery mode", TemporaryError),
    m("too many connections", TemporaryError), // MySQL 1040, redis maxclients
    m("too many clients already", TemporaryError), // PostgreSQL
    // --- permission_error ----------------------------------------------------------------
    m("permission denied", PermissionError),
    m("access denied", PermissionError), // MySQL 1045, S3 AccessDenied
    m("password authentication failed", PermissionError), // PostgreSQL
    m("authentication failed", PermissionError),
    m("invalid password", PermissionError),
    m("invalid username-password pair", PermissionError), // redis WRONGPASS
    m("wrongpass", PermissionError),
    m("noauth", PermissionError), // redis NOAUTH
    m("not authorized", PermissionError),
    m("unauthorized", PermissionError), // HTTP 401's reason phrase
    m("unauthorised", PermissionError),
    m("forbidden", PermissionError), // HTTP 403's reason phrase
    m("invalid credentials", PermissionError),
    m("invalid api key", PermissionError),
    // --- configuration_error -------------------------------------------------------------
    m("certificate verify failed", ConfigurationError), // TLS trust misconfigured
    m("no module named", ConfigurationError),
    m("improperlyconfigured", ConfigurationError),
    m("settings are not configured", ConfigurationError), // django
    m("no such table", ConfigurationError),               // sqlite: migrations not run
    m("no such column", ConfigurationError),              // sqlite
    m("undefinedtable", ConfigurationError),              // wrapped psycopg2.errors.UndefinedTable
    m("undefinedcolumn", ConfigurationError),
    m("unknown database", ConfigurationError), // MySQL 1049
    // --- validation_error ----------------------------------------------------------------
    m("validation error", ValidationError), // pydantic: "1 validation error for Order"
    m("validation failed", ValidationError),
    m("unprocessable entity", ValidationError), // HTTP 422's reason phrase
    m("unprocessable content", ValidationError),
    m("bad request", ValidationError), // HTTP 400's reason phrase
    m("invalid input syntax", ValidationError), // PostgreSQL 22P02
    m("violates unique constraint", ValidationError),
    m("violates not-null constraint", ValidationError),
    m("violates check constraint", ValidationError),
    m("duplicate key value", ValidationError),
    m("duplicate entry", ValidationError), // MySQL 1062
    m("value too long for type", ValidationError),
    m("expecting value: line", ValidationError), // json.JSONDecodeError
    // --- logic_error ---------------------------------------------------------------------
    m("wrongtype operation against a key", LogicError), // redis WRONGTYPE
    m("syntax error at or near", LogicError),           // PostgreSQL
    m("object has no attribute", LogicError),
    m("unsupported operand type", LogicError),
    m("is not subscriptable", LogicError),
    m("division by zero", LogicError),
    m("maximum recursion depth exceeded", LogicError),
    m("required positional argument", LogicError),
    m("got an unexpected keyword argument", LogicError),
    // --- data_not_found ------------------------------------------------------------------
    m("matching query does not exist", DataNotFound), // django
    m("no row was found", DataNotFound),              // sqlalchemy
    m("no such file or directory", DataNotFound),
    m("the specified key does not exist", DataNotFound), // S3 NoSuchKey
    m("no such job", DataNotFound),                      // rq
];

/// HTTP status codes, matched only as standalone tokens (`429`, not `4290` or `/429/`) and
/// only in an HTTP failure. 500 is deliberately absent: the server may have done part of the
/// work, so it stays `unknown`.
pub static HTTP_STATUS_RULES: &[StatusRule] = HTTP_STATUS_RULE_TABLE;

/// The rows of [`HTTP_STATUS_RULES`] as a `const`, for the compile-time indexes (`index.rs`).
pub(crate) const HTTP_STATUS_RULE_TABLE: &[StatusRule] = &[
    s("429", RateLimit),
    s("408", Timeout),
    s("504", Timeout),
    s("502", TemporaryError),
    s("503", TemporaryError),
    s("400", ValidationError),
    s("422", ValidationError),
    s("401", PermissionError),
    s("403", PermissionError),
    s("404", DataNotFound),
    s("410", DataNotFound),
];

/// Type-name fragments (lower case) that make a failure an HTTP one: `HTTPError`
/// (requests, urllib), `HTTPStatusError` (httpx), `HTTPException`, aiohttp's
/// `ClientResponseError`.
pub static HTTP_CONTEXT_TYPES: &[&str] = &["http", "clientresponseerror"];

/// Message phrases (lower case) that make a failure an HTTP one.
pub static HTTP_CONTEXT_PHRASES: &[&str] = HTTP_CONTEXT_PHRASE_TABLE;

/// The rows of [`HTTP_CONTEXT_PHRASES`] as a `const`, for the compile-time indexes (`index.rs`).
pub(crate) const HTTP_CONTEXT_PHRASE_TABLE: &[&str] = &[
    "http error",   // urllib: "HTTP Error 429: Too Many Requests"
    "client error", // requests: "429 Client Error: …", httpx: "Client error '429 …'"
    "server error", // requests: "503 Server Error: …", httpx: "Server error '503 …'"
    "status code",
    "status_code",
    "http status",
    "response status",
    "http/1.",
    "http/2",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_lower_case_and_non_empty() {
        for r in MESSAGE_RULES {
            assert!(!r.phrase.is_empty());
            assert_eq!(r.phrase, r.phrase.to_ascii_lowercase(), "{}", r.phrase);
        }
        for p in HTTP_CONTEXT_PHRASES.iter().chain(HTTP_CONTEXT_TYPES) {
            assert_eq!(*p, p.to_ascii_lowercase());
        }
    }

    #[test]
    fn no_rule_is_listed_twice() {
        for (i, a) in TYPE_RULES.iter().enumerate() {
            assert!(!a.name.is_empty());
            for b in &TYPE_RULES[i + 1..] {
                assert!(!a.name.eq_ignore_ascii_case(b.name), "{}", a.name);
            }
            for b in INTERRUPTED_TYPES {
                assert!(!a.name.eq_ignore_ascii_case(b), "{}", a.name);
            }
        }
        for (i, a) in MESSAGE_RULES.iter().enumerate() {
            for b in &MESSAGE_RULES[i + 1..] {
                assert_ne!(a.phrase, b.phrase);
            }
        }
    }

    #[test]
    fn status_codes_are_three_digits_and_never_unknown() {
        for r in HTTP_STATUS_RULES {
            assert_eq!(r.code.len(), 3);
            assert!(r.code.bytes().all(|b| b.is_ascii_digit()));
            assert_ne!(r.failure_type, Unknown);
        }
        for r in TYPE_RULES {
            assert_ne!(r.failure_type, Unknown);
        }
        for r in MESSAGE_RULES {
            assert_ne!(r.failure_type, Unknown);
        }
    }
}
