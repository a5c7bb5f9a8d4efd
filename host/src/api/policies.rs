//! `/api/v1/policies*` (role `admin` for every change, `read` to look): upload, list, show,
//! retire and change the settings of policies (`crate::registry` does the work;
//! docs/policies.md tells the story). Bindings are in `bindings`, replays in `replay`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use super::auth::Actor;
use super::error::{ApiJson, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::policy::PolicyLimits;
use crate::registry::{MAX_UPLOAD_BYTES, PolicyMeta, RegistryError, Upload};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)))
        .routes(routes!(show, retire, settings))
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
            RegistryError::Redis(q) => q.into(),
            RegistryError::Engine(detail) => ApiError::Internal(format!("policy engine: {detail}")),
        }
    }
}

pub(super) fn registry(
    state: &AppState,
) -> Result<&std::sync::Arc<crate::registry::Registry>, ApiError> {
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
