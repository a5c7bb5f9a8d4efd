//! `/ui/policies`: the bindings (pattern → policy, params, shadow, revision), the shadow
//! experiments (agreement and disagreements with examples), each binding's history with
//! rollback and promote, the uploaded policies, and the upload and bind forms. Reading is
//! for every role; every change is `admin` (the gate refuses it otherwise) and goes through
//! the registry as the API's do, audited under the viewer's token name.

use askama::Template;
use axum::Form;
use axum::extract::{Multipart, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Chrome, html};
use crate::registry::{BindingSpec, PolicyRef, Registry, Upload};
use crate::ui::format::{self, When, short_digest, thousands};
use crate::ui::{Ui, UiError, UiResult, UiState, Viewer, redirect};

/// History entries shown per binding.
const HISTORY_ROWS: usize = 10;
/// Longest text field of the forms (the registry checks each further).
const MAX_FIELD_BYTES: usize = 4096;
/// Most params a binding form may give.
const MAX_PARAMS: usize = 64;

pub struct BindingRow {
    pub pattern: String,
    pub policy: String,
    pub policy_name: String,
    pub params: String,
    pub shadow: Option<(String, String)>,
    /// Automatic retry and the brakes, in a line (empty when none is set).
    pub brakes: String,
    pub revision: u64,
    pub changed_by: String,
    pub changed_at: When,
    pub history: Vec<HistoryRow>,
}

pub struct HistoryRow {
    pub revision: String,
    pub text: String,
    pub by: String,
    pub at: Option<When>,
}

pub struct PolicyRow {
    pub digest: String,
    pub short: String,
    pub name: String,
    pub uploader: String,
    pub uploaded: When,
    pub size: String,
    pub wasi: bool,
}

pub struct ExperimentRow {
    pub pattern: String,
    pub policy: String,
    pub shadow: String,
    pub decisions: String,
    pub rate: String,
    pub disagreements: Vec<(String, String)>,
    pub examples: Vec<(String, String, String, String)>,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    chrome: Chrome,
    revision: u64,
    bindings: Vec<BindingRow>,
    policies: Vec<PolicyRow>,
    experiments: Vec<ExperimentRow>,
    experiments_note: Option<String>,
    done: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Done {
    done: String,
    pattern: String,
    digest: String,
}

fn registry(ui: &Ui) -> Result<&std::sync::Arc<Registry>, UiError> {
    ui.app
        .service
        .registry()
        .ok_or_else(|| UiError::internal("this server runs without the policy registry"))
}

fn params_text(params: &[(String, String)]) -> String {
    crate::registry::params_json(&params.to_vec())
}

pub async fn page(
    State(ui): UiState,
    viewer: Viewer,
    Query(d): Query<Done>,
) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let registry = registry(&ui)?;
    let snapshot = registry
        .store()
        .bindings()
        .await
        .map_err(crate::api::ApiError::from)?;
    let metas = registry
        .policies()
        .await
        .map_err(crate::api::ApiError::from)?;
    let name_of = |digest: &str| {
        metas
            .iter()
            .find(|m| m.digest == digest)
            .map_or_else(|| "(unknown)".to_string(), |m| m.name.clone())
    };
    let mut bindings = Vec::with_capacity(snapshot.bindings.len());
    for b in &snapshot.bindings {
        let history = registry
            .store()
            .history(&b.pattern)
            .await
            .map_err(crate::api::ApiError::from)?;
        let history = history
            .iter()
            .rev()
            .take(HISTORY_ROWS)
            .map(|h| match h {
                Some(s) => HistoryRow {
                    revision: s.revision.to_string(),
                    text: format!(
                        "{} {}{}",
                        name_of(&s.spec.active.policy),
                        short_digest(&s.spec.active.policy),
                        s.spec
                            .shadow
                            .as_ref()
                            .map(|sh| format!(", shadow {}", short_digest(&sh.policy)))
                            .unwrap_or_default()
                    ),
                    by: s.changed_by.clone(),
                    at: Some(When::of_ms(s.changed_at_ms, now)),
                },
                None => HistoryRow {
                    revision: String::new(),
                    text: "unbound".into(),
                    by: String::new(),
                    at: None,
                },
            })
            .collect();
        bindings.push(BindingRow {
            brakes: brakes_text(&b.spec.brakes()),
            pattern: b.pattern.clone(),
            policy_name: name_of(&b.spec.active.policy),
            policy: b.spec.active.policy.clone(),
            params: params_text(&b.spec.active.params),
            shadow: b
                .spec
                .shadow
                .as_ref()
                .map(|s| (s.policy.clone(), params_text(&s.params))),
            revision: b.revision,
            changed_by: b.changed_by.clone(),
            changed_at: When::of_ms(b.changed_at_ms, now),
            history,
        });
    }
    let policies = metas
        .iter()
        .map(|m| PolicyRow {
            digest: m.digest.clone(),
            short: short_digest(&m.digest),
            name: m.name.clone(),
            uploader: m.uploader.clone(),
            uploaded: When::of_ms(m.uploaded_at_ms, now),
            size: format!("{} KiB", thousands(m.size.div_ceil(1024))),
            wasi: m.allow_wasi,
        })
        .collect();
    let (experiments, experiments_note) = match ui
        .app
        .analytics
        .experiments(now.saturating_sub(86_400_000))
        .await
    {
        Ok(Some(report)) => (
            report
                .experiments
                .iter()
                .map(|e| ExperimentRow {
                    pattern: e.pattern.clone(),
                    policy: short_digest(&e.policy_digest),
                    shadow: short_digest(&e.shadow_digest),
                    decisions: thousands(e.decisions),
                    rate: format::percent(Some(e.agreement_rate)),
                    disagreements: e
                        .disagreements
                        .iter()
                        .map(|(k, n)| (k.replace('_', " "), thousands(*n)))
                        .collect(),
                    examples: e
                        .examples
                        .iter()
                        .take(5)
                        .map(|x| {
                            (
                                x.job_id.clone().unwrap_or_default(),
                                x.kind.replace('_', " "),
                                x.active_outcome.clone(),
                                x.shadow_outcome.clone(),
                            )
                        })
                        .collect(),
                })
                .collect(),
            (!report.complete).then(|| "Only the newest 200,000 records were read.".into()),
        ),
        Ok(None) => (Vec::new(), Some("No audit directory is configured.".into())),
        Err(e) => (
            Vec::new(),
            Some(format!("The audit trail cannot be read now: {e}")),
        ),
    };
    let done = match d.done.as_str() {
        "uploaded" => Some(format!("Uploaded policy {}.", short_digest(&d.digest))),
        "bound" => Some(format!("Bound {}.", d.pattern)),
        "rolled_back" => Some(format!("Rolled back {}.", d.pattern)),
        "promoted" => Some(format!("Promoted the shadow of {}.", d.pattern)),
        _ => None,
    };
    Ok(html(&PoliciesPage {
        chrome: Chrome::new(viewer, "policies", "Policies"),
        revision: snapshot.revision,
        bindings,
        policies,
        experiments,
        experiments_note,
        done,
    }))
}

/// `key=value` per line (blank lines and `#` comments skipped).
fn parse_params(text: &str) -> Result<Vec<(String, String)>, UiError> {
    let mut params = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line.split_once('=').ok_or_else(|| {
            UiError::bad_request(format!("params are key=value, one per line, not {line:?}"))
        })?;
        params.push((k.trim().to_string(), v.trim().to_string()));
    }
    if params.len() > MAX_PARAMS {
        return Err(UiError::bad_request(format!("at most {MAX_PARAMS} params")));
    }
    Ok(params)
}

fn field(name: &str, value: &str) -> Result<String, UiError> {
    let v = value.trim();
    if v.len() > MAX_FIELD_BYTES {
        return Err(UiError::bad_request(format!(
            "{name} is over {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(v.to_string())
}

/// A binding's automatic retry and brakes in a line: "auto-retry · breaker 50 % of ≥ 10 in
/// 60 s, open 30–600 s · budget 0.2 × successes, ≥ 10/min · ≤ 200 requeues/s".
fn brakes_text(b: &crate::brake::Brakes) -> String {
    let mut parts = Vec::new();
    if b.auto_retry {
        parts.push("auto-retry".to_string());
    }
    if let Some(c) = &b.breaker {
        parts.push(format!(
            "breaker {:.0} % of ≥ {} in {} s, open {}–{} s, {} probes",
            c.failure_rate * 100.0,
            c.min_outcomes,
            c.window_seconds,
            c.open_seconds,
            c.max_open_seconds,
            c.half_open_probes
        ));
    }
    if let Some(c) = &b.budget {
        parts.push(format!(
            "budget {} × successes, ≥ {}/min{}",
            c.ratio,
            c.min_per_minute,
            if c.apply_to_manual {
                ", manual too"
            } else {
                ""
            }
        ));
    }
    if let Some(n) = b.max_requeues_per_second {
        parts.push(format!("≤ {n} requeues/s"));
    }
    parts.join(" · ")
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BindForm {
    pattern: String,
    policy: String,
    params: String,
    shadow: String,
    shadow_params: String,
}

pub async fn bind(State(ui): UiState, viewer: Viewer, Form(f): Form<BindForm>) -> UiResult {
    let pattern = field("pattern", &f.pattern)?;
    let policy = field("policy", &f.policy)?;
    if pattern.is_empty() || policy.is_empty() {
        return Err(UiError::bad_request(
            "a binding needs a pattern and a policy",
        ));
    }
    let shadow = field("shadow", &f.shadow)?;
    let active = PolicyRef {
        policy,
        params: parse_params(&field("params", &f.params)?)?,
    };
    // The form sets the policies; auto-retry and the brakes (set over the API) are kept.
    let current = registry(&ui)?
        .store()
        .bindings()
        .await
        .map_err(crate::api::ApiError::from)?
        .bindings
        .into_iter()
        .find(|b| b.pattern == pattern)
        .map(|b| b.spec);
    let spec = BindingSpec {
        active: active.clone(),
        ..current.unwrap_or_else(|| BindingSpec::of(active))
    };
    let spec = BindingSpec {
        shadow: (!shadow.is_empty())
            .then(|| -> Result<PolicyRef, UiError> {
                Ok(PolicyRef {
                    policy: shadow.clone(),
                    params: parse_params(&field("shadow_params", &f.shadow_params)?)?,
                })
            })
            .transpose()?,
        ..spec
    };
    registry(&ui)?
        .bind(&pattern, &spec, &viewer.actor, crate::clock::now_ms())
        .await
        .map_err(crate::api::ApiError::from)?;
    Ok(redirect(&format!(
        "/ui/policies?done=bound&pattern={}",
        format::url_encode(&pattern)
    )))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PatternForm {
    pattern: String,
}

pub async fn rollback(State(ui): UiState, viewer: Viewer, Form(f): Form<PatternForm>) -> UiResult {
    let pattern = field("pattern", &f.pattern)?;
    registry(&ui)?
        .rollback(&pattern, &viewer.actor, crate::clock::now_ms())
        .await
        .map_err(crate::api::ApiError::from)?;
    Ok(redirect(&format!(
        "/ui/policies?done=rolled_back&pattern={}",
        format::url_encode(&pattern)
    )))
}

pub async fn promote(State(ui): UiState, viewer: Viewer, Form(f): Form<PatternForm>) -> UiResult {
    let pattern = field("pattern", &f.pattern)?;
    registry(&ui)?
        .promote(&pattern, &viewer.actor, crate::clock::now_ms())
        .await
        .map_err(crate::api::ApiError::from)?;
    Ok(redirect(&format!(
        "/ui/policies?done=promoted&pattern={}",
        format::url_encode(&pattern)
    )))
}

/// The upload form: the component in `policy`, and `name`, `description`, `allow_wasi`.
pub async fn upload(State(ui): UiState, viewer: Viewer, mut form: Multipart) -> UiResult {
    let bad = |m: String| UiError::bad_request(m);
    let (mut bytes, mut name, mut description, mut allow_wasi) = (None, None, String::new(), false);
    while let Some(part) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("unreadable form: {}", e.body_text())))?
    {
        let key = part.name().unwrap_or_default().to_string();
        if key == "policy" {
            bytes = Some(
                part.bytes()
                    .await
                    .map_err(|e| bad(format!("unreadable file: {}", e.body_text())))?,
            );
            continue;
        }
        let text = part
            .text()
            .await
            .map_err(|e| bad(format!("unreadable field {key}: {}", e.body_text())))?;
        match key.as_str() {
            "name" => name = Some(field("name", &text)?),
            "description" => description = field("description", &text)?,
            "allow_wasi" => allow_wasi = text == "on",
            "csrf" => {}
            other => return Err(bad(format!("unknown form field {other:?}"))),
        }
    }
    let bytes = bytes
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("choose a policy component (.wasm) to upload".into()))?;
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("a policy needs a name".into()))?;
    let uploaded = registry(&ui)?
        .upload(
            bytes.to_vec(),
            Upload {
                name,
                description,
                limits: None,
                allow_wasi,
            },
            &viewer.actor,
            crate::clock::now_ms(),
        )
        .await
        .map_err(crate::api::ApiError::from)?;
    Ok(redirect(&format!(
        "/ui/policies?done=uploaded&digest={}",
        format::url_encode(&uploaded.meta.digest)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_lines() {
        assert_eq!(
            parse_params("max_attempts=5\n\n# note\n cooldown_seconds = 30 ").unwrap(),
            vec![
                ("max_attempts".to_string(), "5".to_string()),
                ("cooldown_seconds".to_string(), "30".to_string())
            ]
        );
        assert!(parse_params("oops").is_err());
        assert!(parse_params("").unwrap().is_empty());
    }
}
