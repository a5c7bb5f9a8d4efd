//! `/api/v1/policies*` (role `admin` for every change, `read` to look): upload and retire
//! policies, bind them to job-type patterns, see a pattern's history and roll it back
//! (`crate::registry` does the work; docs/policies.md tells the story).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::Actor;
use super::error::{ApiJson, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::{ApiError, AppState};
use crate::policy::PolicyLimits;
use crate::registry::{
    BindingSpec, MAX_UPLOAD_BYTES, PolicyMeta, PolicyRef, RegistryError, StoredBinding, SwapStatus,
    Upload,
};
use crate::retry::service::now_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/policies",
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/api/v1/policies/bindings", get(bindings))
        .route("/api/v1/policies/experiments", get(experiments))
        .route(
            "/api/v1/policies/bindings/{pattern}",
            get(binding).put(bind).delete(unbind),
        )
        .route("/api/v1/policies/bindings/{pattern}/history", get(history))
        .route(
            "/api/v1/policies/bindings/{pattern}/rollback",
            post(rollback),
        )
        .route("/api/v1/policies/bindings/{pattern}/promote", post(promote))
        .route(
            "/api/v1/policies/{digest}",
            get(show).delete(retire).patch(settings),
        )
        .route("/api/v1/policies/{digest}/replay", post(replay))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(message) => ApiError::bad_request("invalid_request", message),
            RegistryError::NotFound(message) => ApiError::NotFound(message),
            RegistryError::Conflict(message) => ApiError::Conflict(message),
            RegistryError::Rejected(load) => ApiError::Unprocessable {
                code: "policy_rejected",
                message: load.to_string(),
            },
            RegistryError::Queue(q) => q.into(),
            RegistryError::Engine(detail) => ApiError::Internal(format!("policy engine: {detail}")),
        }
    }
}

fn registry(state: &AppState) -> Result<&std::sync::Arc<crate::registry::Registry>, ApiError> {
    state
        .service
        .registry()
        .ok_or_else(|| ApiError::Internal("this server runs without the policy registry".into()))
}

/// A policy as listed: what was uploaded, and the patterns that bind it now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyJson {
    #[serde(flatten)]
    pub meta: PolicyMeta,
    /// Patterns whose acting policy this is.
    pub bound_to: Vec<String>,
    /// Patterns where it runs in shadow.
    pub shadow_for: Vec<String>,
}

/// `GET /api/v1/policies`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyList {
    /// Every uploaded policy, oldest first; the built-in default is among them.
    pub policies: Vec<PolicyJson>,
}

async fn with_bindings(
    state: &AppState,
    metas: Vec<PolicyMeta>,
) -> Result<Vec<PolicyJson>, ApiError> {
    let snapshot = registry(state)?.store().bindings().await?;
    Ok(metas
        .into_iter()
        .map(|meta| {
            let bound_to = snapshot
                .bindings
                .iter()
                .filter(|b| b.spec.active.policy == meta.digest)
                .map(|b| b.pattern.clone())
                .collect();
            let shadow_for = snapshot
                .bindings
                .iter()
                .filter(|b| {
                    b.spec
                        .shadow
                        .as_ref()
                        .is_some_and(|s| s.policy == meta.digest)
                })
                .map(|b| b.pattern.clone())
                .collect();
            PolicyJson {
                meta,
                bound_to,
                shadow_for,
            }
        })
        .collect())
}

/// Every uploaded policy, the built-in default included, with where each is bound.
#[utoipa::path(
    get,
    path = "/api/v1/policies",
    tag = "policies",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Every policy", body = PolicyList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<PolicyList>, ApiError> {
    let metas = registry(&state)?.policies().await?;
    Ok(Json(PolicyList {
        policies: with_bindings(&state, metas).await?,
    }))
}

/// What an upload says besides the bytes: query parameters, or the text fields of a
/// `multipart/form-data` upload (each given once: in the query or as a field, never both).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// A name for people (1–128 bytes). Required (here or as a form field).
    pub name: Option<String>,
    /// What it is for (up to 4096 bytes).
    #[serde(default)]
    pub description: String,
    /// Allow a policy that imports WASI (componentize-py, componentize-js): it runs with the
    /// deny-all WASI. Off by default.
    #[serde(default)]
    pub allow_wasi: bool,
    /// CPU limit per evaluation in fuel units (default: the server's `[policy] fuel`).
    pub fuel: Option<u64>,
    /// Wall-clock limit per evaluation, ms (default: the server's `[policy] deadline_ms`).
    pub deadline_ms: Option<u64>,
    /// Linear memory cap, bytes (default: the server's `[policy] memory_bytes`).
    pub memory_bytes: Option<u64>,
    /// Most core/component instances per evaluation (a componentize-py policy needs ~14).
    pub instances: Option<u64>,
}

/// A `multipart/form-data` upload (`curl -F policy=@policy.wasm -F name=strict`): the file in
/// the part `policy`, and any of the query parameters as text parts.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the form; the handler reads it part by part"
)]
pub struct UploadForm {
    /// The component's bytes.
    #[schema(value_type = String, format = Binary)]
    pub policy: Vec<u8>,
    pub name: String,
    pub description: Option<String>,
    pub allow_wasi: Option<bool>,
    pub fuel: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub instances: Option<u64>,
}

/// Most text fields (and bytes in each) a multipart upload may carry besides the file.
const MAX_FORM_FIELDS: usize = 16;
const MAX_FORM_FIELD_BYTES: usize = 8192;

/// Reads a multipart upload: the `policy` file part and the text fields, into `q`.
/// A setting given twice (as a query parameter and a form field, or as two fields) is
/// refused: which one would win is not the caller's to guess.
async fn read_form(
    mut q: UploadQuery,
    query_keys: &[String],
    mut form: axum::extract::Multipart,
) -> Result<(UploadQuery, Bytes), ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_body", message);
    let mut policy = None;
    let mut fields = 0;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("unreadable multipart body: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "policy" {
            if policy.is_some() {
                return Err(bad("more than one `policy` part".into()));
            }
            let bytes = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(MAX_UPLOAD_BYTES as u64)
                } else {
                    bad(format!("unreadable `policy` part: {}", e.body_text()))
                }
            })?;
            policy = Some(bytes);
            continue;
        }
        fields += 1;
        if fields > MAX_FORM_FIELDS {
            return Err(bad(format!("more than {MAX_FORM_FIELDS} form fields")));
        }
        if query_keys.contains(&name) {
            return Err(bad(format!(
                "`{name}` is given both as a query parameter and as a form field: give it once"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(bad(format!("the form field `{name}` is given twice")));
        }
        let text = field
            .text()
            .await
            .map_err(|e| bad(format!("unreadable field `{name}`: {}", e.body_text())))?;
        if text.len() > MAX_FORM_FIELD_BYTES {
            return Err(bad(format!(
                "field `{name}` is over {MAX_FORM_FIELD_BYTES} bytes"
            )));
        }
        let number = |text: &str| {
            text.trim().parse::<u64>().map_err(|_| {
                bad(format!(
                    "field `{name}` must be a whole number, not `{text}`"
                ))
            })
        };
        match name.as_str() {
            "name" => q.name = Some(text),
            "description" => q.description = text,
            "allow_wasi" => {
                q.allow_wasi = match text.trim() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(bad(format!(
                            "field `allow_wasi` must be true or false, not `{other}`"
                        )));
                    }
                }
            }
            "fuel" => q.fuel = Some(number(&text)?),
            "deadline_ms" => q.deadline_ms = Some(number(&text)?),
            "memory_bytes" => q.memory_bytes = Some(number(&text)?),
            "instances" => q.instances = Some(number(&text)?),
            other => {
                return Err(bad(format!(
                    "unknown form field `{other}` (expected policy, name, description, \
                     allow_wasi, fuel, deadline_ms, memory_bytes, instances)"
                )));
            }
        }
    }
    let policy = policy.ok_or_else(|| {
        bad(
            "a multipart upload needs the component in a part named `policy` \
             (curl -F policy=@policy.wasm -F name=…)"
                .into(),
        )
    })?;
    Ok((q, policy))
}

/// The answer to an upload: the policy as stored, and whether this upload stored it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Uploaded {
    #[serde(flatten)]
    pub policy: PolicyJson,
    /// `true` (status 200) when these bytes were stored already: nothing changed, and the
    /// policy is answered as stored (its name, uploader and limits as they were); `false`
    /// (status 201) when this upload stored it.
    pub already_stored: bool,
}

/// Uploads a policy component: the raw `.wasm` bytes as the body (`application/wasm`), or a
/// `multipart/form-data` form with the file in the part `policy`. It is validated as the
/// engine loads policies — size, a component, the `retry-policy` world, no imports beyond
/// (allowed) WASI, limits the engine's pool can hold, a smoke evaluation over sample
/// failures — then stored by digest and announced, so every instance compiles it before it
/// is bound (201). The same bytes again keep what is stored: 200 with the stored policy and
/// `already_stored: true` (a retired one is restored) when the upload asks for the stored
/// settings (an omitted one means its default), else 409 `conflict` naming the fields that
/// differ — change those with `PATCH /api/v1/policies/{digest}`.
#[utoipa::path(
    post,
    path = "/api/v1/policies",
    tag = "policies",
    params(UploadQuery),
    request_body(
        description = "The component: raw bytes, or a form with the file in `policy`",
        content(
            (Vec<u8> = "application/wasm"),
            (UploadForm = "multipart/form-data"),
        )
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "These bytes were stored already, with these settings: nothing changed (`already_stored: true`)", body = Uploaded),
        (status = 201, description = "Stored", body = Uploaded),
        (status = 400, description = "A bad name, description, limit or form", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 409, description = "These bytes are stored already with other settings (named): nothing changed; use `PATCH /api/v1/policies/{digest}`", body = ErrorBody),
        (status = 413, description = "Over the upload size cap", body = ErrorBody),
        (status = 422, description = "Not a valid policy, or limits the engine cannot hold: `policy_rejected` with the reason", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiQuery(q): ApiQuery<UploadQuery>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    use axum::extract::FromRequest as _;
    let multipart = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("multipart/form-data"));
    let (q, body) = if multipart {
        let query_keys: Vec<String> = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split('=').next().unwrap_or_default().to_string())
            .collect();
        let form = axum::extract::Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
        read_form(q, &query_keys, form).await?
    } else {
        let body = Bytes::from_request(request, &state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(MAX_UPLOAD_BYTES as u64)
            } else {
                ApiError::bad_request("invalid_body", e.body_text())
            }
        })?;
        (q, body)
    };
    let Some(name) = q.name else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "a policy needs a name: ?name=… (or a `name` form field)",
        ));
    };
    let registry = registry(&state)?;
    let base = *registry.builtin().limits();
    let custom = q.fuel.is_some()
        || q.deadline_ms.is_some()
        || q.memory_bytes.is_some()
        || q.instances.is_some();
    let limits = custom.then(|| PolicyLimits {
        fuel: q.fuel.unwrap_or(base.fuel),
        deadline_ms: q.deadline_ms.unwrap_or(base.deadline_ms),
        memory_bytes: q
            .memory_bytes
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(base.memory_bytes),
        instances: q
            .instances
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(base.instances),
        ..base
    });
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be the policy component's bytes (Content-Type: application/wasm), \
             or a multipart/form-data form with them in the part `policy`",
        ));
    }
    let uploaded = registry
        .upload(
            body.to_vec(),
            Upload {
                name,
                description: q.description,
                limits,
                allow_wasi: q.allow_wasi,
            },
            &actor,
            now_ms(),
        )
        .await?;
    let mut listed = with_bindings(&state, vec![uploaded.meta]).await?;
    let policy = listed
        .pop()
        .ok_or_else(|| ApiError::Internal("the uploaded policy vanished".into()))?;
    let status = if uploaded.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Uploaded {
            policy,
            already_stored: !uploaded.created,
        }),
    ))
}

/// The body of `PATCH /api/v1/policies/{digest}`: the settings to change, each optional (an
/// omitted one stays as stored). An unknown field is refused by name.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    /// A name for people (1–128 bytes).
    pub name: Option<String>,
    /// What it is for (up to 4096 bytes).
    pub description: Option<String>,
    /// Run it with the deny-all WASI (a policy that imports WASI needs it).
    pub allow_wasi: Option<bool>,
    /// CPU limit per evaluation, fuel units (1–10,000,000,000).
    pub fuel: Option<u64>,
    /// Wall-clock limit per evaluation, ms (1–10,000).
    pub deadline_ms: Option<u64>,
    /// Linear memory cap, bytes (at most `[engine] max_memory_bytes`).
    pub memory_bytes: Option<u64>,
    /// Most core instances per evaluation (1–32, what the engine's pool holds).
    pub instances: Option<u64>,
}

/// The answer to a settings change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingsChanged {
    /// The policy as stored now.
    pub policy: PolicyJson,
    /// The settings that changed (empty: the request asked for what was stored, and nothing
    /// was written).
    pub changed: Vec<String>,
    /// The bindings revision the change made (every instance reloads the policy with its
    /// new settings when it sees it); `null` when nothing changed.
    pub revision: Option<u64>,
}

/// Changes a stored policy's settings: its name, description, WASI opt-in and limits — the
/// only way to change them (uploading the same bytes again keeps what is stored). Limits are
/// checked against the engine's pool and the policy is loaded and smoke-evaluated under the
/// new settings; then the change is written in one atomic step with a new bindings revision
/// and its audit record (`policy_settings_changed`, actor, before and after), and announced:
/// every instance reloads the policy with its new settings as after a binding change. Live
/// on this instance when it answers.
#[utoipa::path(
    patch,
    path = "/api/v1/policies/{digest}",
    tag = "policies",
    params(DigestPath),
    request_body = SettingsRequest,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Changed (or already so: `changed` is empty)", body = SettingsChanged),
        (status = 400, description = "A bad digest, name, description or body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 409, description = "The policy changed meanwhile, or the limits of the built-in default (set by `[policy]`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Limits the engine cannot hold, or the policy fails under the new settings: `policy_rejected` with the reason", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn settings(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<DigestPath>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<SettingsRequest>,
) -> Result<Json<SettingsChanged>, ApiError> {
    let size = |field: &str, v: Option<u64>| {
        v.map(|n| {
            usize::try_from(n).map_err(|_| {
                ApiError::bad_request("invalid_json", format!("`{field}` is too large: {n}"))
            })
        })
        .transpose()
    };
    let change = crate::registry::SettingsChange {
        memory_bytes: size("memory_bytes", body.memory_bytes)?,
        instances: size("instances", body.instances)?,
        name: body.name,
        description: body.description,
        allow_wasi: body.allow_wasi,
        fuel: body.fuel,
        deadline_ms: body.deadline_ms,
    };
    let changed = registry(&state)?
        .change_settings(&p.digest, &change, &actor)
        .await?;
    let mut listed = with_bindings(&state, vec![changed.meta]).await?;
    let policy = listed
        .pop()
        .ok_or_else(|| ApiError::Internal("the changed policy vanished".into()))?;
    Ok(Json(SettingsChanged {
        policy,
        changed: changed.changed.into_iter().map(str::to_string).collect(),
        revision: changed.revision,
    }))
}

/// The digest in a path.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DigestPath {
    /// The policy's sha256, 64 hex digits.
    pub digest: String,
}

/// One policy.
#[utoipa::path(
    get,
    path = "/api/v1/policies/{digest}",
    tag = "policies",
    params(DigestPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The policy", body = PolicyJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<DigestPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<PolicyJson>, ApiError> {
    let meta = registry(&state)?
        .store()
        .policy(&p.digest)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no policy with digest {}", p.digest)))?;
    let mut listed = with_bindings(&state, vec![meta]).await?;
    listed
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::Internal("the policy vanished".into()))
}

/// Retires a policy: refused (409) while a binding or shadow names it. Its bytes stay in
/// Redis, so every past decision can still be replayed.
#[utoipa::path(
    delete,
    path = "/api/v1/policies/{digest}",
    tag = "policies",
    params(DigestPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Retired", body = PolicyJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 409, description = "Still bound", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn retire(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<DigestPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<PolicyJson>, ApiError> {
    let meta = registry(&state)?.retire(&p.digest).await?;
    Ok(Json(PolicyJson {
        meta,
        bound_to: Vec::new(),
        shadow_for: Vec::new(),
    }))
}

/// `GET /api/v1/policies/bindings`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingList {
    /// The revision in Redis.
    pub revision: u64,
    /// Every binding, by pattern.
    pub bindings: Vec<StoredBinding>,
    /// This instance's live table: its revision, and why a newer one is not live (if so).
    pub live: SwapStatus,
}

/// Every binding, and whether this instance runs the newest revision.
#[utoipa::path(
    get,
    path = "/api/v1/policies/bindings",
    tag = "policies",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The bindings", body = BindingList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn bindings(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingList>, ApiError> {
    let registry = registry(&state)?;
    let snapshot = registry.store().bindings().await?;
    Ok(Json(BindingList {
        revision: snapshot.revision,
        bindings: snapshot.bindings,
        live: registry.status(),
    }))
}

/// The pattern in a path: an exact job type, a prefix glob (`payments.*`) or `*`
/// (URL-encode `*` as `%2A` if your client insists).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PatternPath {
    pub pattern: String,
}

/// One binding.
#[utoipa::path(
    get,
    path = "/api/v1/policies/bindings/{pattern}",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The binding", body = StoredBinding),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 404, description = "Nothing bound to this pattern", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn binding(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<StoredBinding>, ApiError> {
    let snapshot = registry(&state)?.store().bindings().await?;
    snapshot
        .bindings
        .into_iter()
        .find(|b| b.pattern == p.pattern)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("nothing is bound to `{}`", p.pattern)))
}

/// The body of `PUT /api/v1/policies/bindings/{pattern}`: the acting policy with its params,
/// and optionally a shadow. An unknown field is refused by name (a field this version does
/// not know is never silently dropped).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The acting policy's digest.
    pub policy: String,
    /// Its params by name (values are strings; the policy's `validate-params` checks them).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// A policy evaluated beside the acting one, whose verdicts are only recorded.
    #[serde(default)]
    pub shadow: Option<PolicyRefRequest>,
}

/// A policy and its params, in a request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRefRequest {
    /// The policy's digest.
    pub policy: String,
    /// Params by name.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl PolicyRefRequest {
    fn into_ref(self) -> PolicyRef {
        PolicyRef {
            policy: self.policy,
            params: self.params.into_iter().collect(),
        }
    }
}

impl BindRequest {
    fn into_spec(self) -> BindingSpec {
        BindingSpec {
            active: PolicyRefRequest {
                policy: self.policy,
                params: self.params,
            }
            .into_ref(),
            shadow: self.shadow.map(PolicyRefRequest::into_ref),
        }
    }
}

/// The answer to a binding change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingChanged {
    /// The bindings revision the change made (live on this instance already).
    pub revision: u64,
    /// The pattern's binding now (`null`: unbound).
    pub binding: Option<StoredBinding>,
}

async fn changed(state: &AppState, pattern: &str) -> Result<Json<BindingChanged>, ApiError> {
    let snapshot = registry(state)?.store().bindings().await?;
    Ok(Json(BindingChanged {
        revision: snapshot.revision,
        binding: snapshot.bindings.into_iter().find(|b| b.pattern == pattern),
    }))
}

/// Binds a pattern to a policy with params (checked by the policy's `validate-params`), and
/// optionally a shadow policy evaluated beside it. Audited, announced, live on every
/// instance within about a second.
#[utoipa::path(
    put,
    path = "/api/v1/policies/bindings/{pattern}",
    tag = "policies",
    params(PatternPath),
    request_body = BindRequest,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Bound", body = BindingChanged),
        (status = 400, description = "A bad pattern, unknown or retired policy, or params the policy refuses", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 422, description = "The stored policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    )
)]
pub async fn bind(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    ApiJson(request): ApiJson<BindRequest>,
) -> Result<Json<BindingChanged>, ApiError> {
    let spec = request.into_spec();
    registry(&state)?
        .bind(&p.pattern, &spec, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// Removes a binding (never `*`: every job type needs a policy).
#[utoipa::path(
    delete,
    path = "/api/v1/policies/bindings/{pattern}",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Removed", body = BindingChanged),
        (status = 400, description = "Not a pattern", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "Nothing bound to this pattern", body = ErrorBody),
        (status = 409, description = "`*`, or the bindings changed meanwhile", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn unbind(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingChanged>, ApiError> {
    registry(&state)?
        .unbind(&p.pattern, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// A pattern's earlier states.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingHistory {
    pub pattern: String,
    /// Newest first; `null` where the pattern was not bound.
    pub history: Vec<Option<StoredBinding>>,
}

/// A pattern's earlier states, newest first (the last 50 changes).
#[utoipa::path(
    get,
    path = "/api/v1/policies/bindings/{pattern}/history",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The history", body = BindingHistory),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingHistory>, ApiError> {
    let history = registry(&state)?.store().history(&p.pattern).await?;
    Ok(Json(BindingHistory {
        pattern: p.pattern,
        history,
    }))
}

/// Restores the pattern's state before its last change (policy, params and shadow; or
/// unbound). Audited and announced like any change; a second rollback undoes the first.
#[utoipa::path(
    post,
    path = "/api/v1/policies/bindings/{pattern}/rollback",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Rolled back", body = BindingChanged),
        (status = 400, description = "Not a pattern, or the earlier state no longer validates", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "No earlier state", body = ErrorBody),
        (status = 409, description = "The bindings changed meanwhile, or it would unbind `*`", body = ErrorBody),
        (status = 422, description = "The earlier policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingChanged>, ApiError> {
    registry(&state)?
        .rollback(&p.pattern, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// Promotes the pattern's shadow: the shadow policy and params become the active ones and
/// the binding has no shadow any more — after watching it in `/api/v1/policies/experiments`.
/// Audited (`binding_promoted`) and announced like any change; `…/rollback` undoes it.
#[utoipa::path(
    post,
    path = "/api/v1/policies/bindings/{pattern}/promote",
    tag = "policies",
    params(PatternPath),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Promoted", body = BindingChanged),
        (status = 400, description = "Not a pattern, or the shadow's params no longer validate", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "Nothing is bound to the pattern", body = ErrorBody),
        (status = 409, description = "The binding has no shadow, or the bindings changed meanwhile", body = ErrorBody),
        (status = 422, description = "The shadow policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn promote(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<PatternPath>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BindingChanged>, ApiError> {
    registry(&state)?
        .promote(&p.pattern, &actor, now_ms())
        .await?;
    changed(&state, &p.pattern).await
}

/// The window of `GET /api/v1/policies/experiments`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExperimentsQuery {
    /// How far back to look, hours (1–720, default 24).
    pub hours: Option<u64>,
}

/// Shadow experiments: for each binding with a shadow policy, how often the shadow agreed
/// with the acting policy over the decisions recorded in the audit trail, how they differed
/// (would retry vs hold, a different time, a different hold) and the newest examples.
#[utoipa::path(
    get,
    path = "/api/v1/policies/experiments",
    tag = "policies",
    params(ExperimentsQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The experiments", body = crate::registry::experiments::ExperimentReport),
        (status = 400, description = "`hours` out of range", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable, or no audit directory is configured", body = ErrorBody),
    )
)]
pub async fn experiments(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ExperimentsQuery>,
    _: NoBody,
) -> Result<Json<crate::registry::experiments::ExperimentReport>, ApiError> {
    let hours = q.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("hours must be 1 to 720, not {hours}"),
        ));
    }
    let dir = state
        .audit_dir
        .as_ref()
        .ok_or(ApiError::AuditNotConfigured)?;
    let since = now_ms().saturating_sub(hours * 3_600_000);
    let mut conn = state.service.backend().connection();
    let report = crate::registry::experiments::report(&mut conn, dir, since).await?;
    Ok(Json(report))
}

/// Which failed jobs a replay looks at (current jobs and recorded decisions alike).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayFilter {
    pub queue: Option<String>,
    /// Job type glob (`payments.*`).
    pub job_type: Option<String>,
}

/// What a replay evaluates the candidate over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplaySource {
    /// The failed jobs in Redis now, beside the policy bound to each now.
    Current,
    /// The policy decisions recorded in the audit trail, each at its recorded clock.
    Audit,
    /// Both.
    #[default]
    Both,
}

/// Which recorded decisions a replay reads: `hours` back from now (default 24), or
/// `since_ms`/`until_ms` (until defaults to now, since to 24 h before until); at most 720 h.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayAudit {
    /// The last this many hours (1–720).
    pub hours: Option<u64>,
    /// Records at or after this time (epoch ms).
    pub since_ms: Option<u64>,
    /// Records before this time (epoch ms).
    pub until_ms: Option<u64>,
    /// Most recorded decisions replayed (1–100,000, default 10,000).
    pub max_records: Option<u64>,
}

/// The body of a replay.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayBody {
    /// The candidate's params.
    #[schema(value_type = BTreeMap<String, String>)]
    pub params: BTreeMap<String, String>,
    pub filter: ReplayFilter,
    /// `current`, `audit` or `both` (default).
    pub source: ReplaySource,
    /// Most current jobs evaluated (1–100,000, default 10,000).
    pub max_jobs: Option<u64>,
    /// The window of recorded decisions (needs `source` `audit` or `both`).
    pub audit: Option<ReplayAudit>,
}

/// Longest window of recorded decisions one replay reads.
const MAX_REPLAY_HOURS: u64 = 720;

/// Checks a replay's window of recorded decisions against `now`: `(since, until, max)`.
fn replay_window(a: &ReplayAudit, now: u64) -> Result<(u64, u64, u64), ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_body", message);
    let max_records = a.max_records.unwrap_or(10_000);
    if !(1..=100_000).contains(&max_records) {
        return Err(bad(format!(
            "audit.max_records must be 1 to 100000, not {max_records}"
        )));
    }
    let (since, until) = match (a.hours, a.since_ms, a.until_ms) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(bad(
                "audit: give either hours or since_ms/until_ms, not both".into(),
            ));
        }
        (Some(h), None, None) => {
            if !(1..=MAX_REPLAY_HOURS).contains(&h) {
                return Err(bad(format!(
                    "audit.hours must be 1 to {MAX_REPLAY_HOURS}, not {h}"
                )));
            }
            (now.saturating_sub(h * 3_600_000), now)
        }
        (None, since, until) => {
            let until = until.unwrap_or(now);
            let since = since.unwrap_or(until.saturating_sub(24 * 3_600_000));
            if since >= until {
                return Err(bad(format!(
                    "audit.since_ms ({since}) must be before audit.until_ms ({until})"
                )));
            }
            if until - since > MAX_REPLAY_HOURS * 3_600_000 {
                return Err(bad(format!(
                    "audit: the window is at most {MAX_REPLAY_HOURS} hours; since_ms to until_ms spans {} ms",
                    until - since
                )));
            }
            (since, until)
        }
    };
    Ok((since, until, max_records))
}

/// What-if: evaluates the policy `digest` with `params` over the current failed jobs beside
/// the policy bound to each job's type now, and over the policy decisions recorded in the
/// audit trail (each on its recorded input, at its recorded clock) beside the verdict the
/// record stands for, and reports how the decisions differ, with counts and examples.
/// Changes nothing. Without an audit directory the recorded section says so.
#[utoipa::path(
    post,
    path = "/api/v1/policies/{digest}/replay",
    tag = "policies",
    params(DigestPath),
    request_body = ReplayBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "How the candidate differs", body = crate::retry::service::ReplayReport),
        (status = 400, description = "Bad body, or params the policy refuses", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 422, description = "The stored policy no longer loads", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<DigestPath>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Json<crate::retry::service::ReplayReport>, ApiError> {
    use crate::retry::service::{RecordedReplay, RecordedWindow, ReplayError, ReplayReport};
    let bad = |message: String| ApiError::bad_request("invalid_body", message);
    let current = body.source != ReplaySource::Audit;
    let recorded = body.source != ReplaySource::Current;
    if !current && body.max_jobs.is_some() {
        return Err(bad(
            "max_jobs limits the current jobs: it needs source `current` or `both`".into(),
        ));
    }
    if !recorded && body.audit.is_some() {
        return Err(bad(
            "audit picks recorded decisions: it needs source `audit` or `both`".into(),
        ));
    }
    let max_jobs = body.max_jobs.unwrap_or(10_000);
    if !(1..=100_000).contains(&max_jobs) {
        return Err(bad(format!("max_jobs must be 1 to 100000, not {max_jobs}")));
    }
    let now = now_ms();
    let (since, until, max_records) = replay_window(&body.audit.unwrap_or_default(), now)?;
    let registry = registry(&state)?;
    let params: crate::policy::Params = body.params.clone().into_iter().collect();
    let candidate = registry.candidate(&p.digest, &params).await?;
    let filter = crate::retry::JobFilter {
        queue: body.filter.queue,
        job_type: body.filter.job_type,
        ..crate::retry::JobFilter::default()
    };
    let mut report = ReplayReport {
        candidate: candidate.policy.digest().to_string(),
        params: body.params,
        current: None,
        recorded: None,
    };
    if current {
        let max_jobs = usize::try_from(max_jobs).unwrap_or(usize::MAX);
        report.current = Some(state.service.replay(&candidate, &filter, max_jobs).await?);
    }
    if recorded {
        report.recorded = Some(match &state.audit_dir {
            None => RecordedReplay::not_configured(since, until),
            Some(dir) => {
                let window = RecordedWindow {
                    since_ms: since,
                    until_ms: until,
                    filter,
                    max_records,
                };
                state
                    .service
                    .replay_recorded(&candidate, dir, registry, &window)
                    .await
                    .map_err(|e| match e {
                        ReplayError::Query(e) => ApiError::from(e),
                        ReplayError::Retry(e) => ApiError::from(e),
                    })?
            }
        });
    }
    Ok(Json(report))
}
