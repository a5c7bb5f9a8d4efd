//! Does an answer match what `/openapi.json` documents for it? A small JSON Schema checker for
//! the subset utoipa emits (`$ref`, `type` lists, `properties`/`required`,
//! `additionalProperties`, `items`, `oneOf`/`anyOf`/`allOf`, `enum`, `minimum`/`maximum`),
//! so the router tests can check what schemathesis checks against the live server
//! (scripts/schemathesis.sh), answer by answer.

use serde_json::Value;

use crate::common::Reply;

/// Checks `reply` against the response `doc` documents for `method template`: its status is
/// listed, its documented headers are present, and its body matches the schema.
pub fn assert_documented(doc: &Value, method: &str, template: &str, reply: &Reply) {
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let status = reply.status.as_str();
    let response = &op["responses"][status];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, not documented: {}",
        reply.json
    );
    if let Some(headers) = response["headers"].as_object() {
        for (name, header) in headers {
            if header["required"] == true {
                assert!(
                    reply.headers.contains_key(name.as_str()),
                    "{method} {template} {status}: no {name} header"
                );
            }
        }
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} {status}: no application/json schema"
    );
    if let Err(e) = check(doc, schema, &reply.json) {
        panic!(
            "{method} {template} {status}: the body does not match the documented schema: \
             {e}\nbody: {}",
            reply.json
        );
    }
}

/// `Ok` when `value` matches `schema` (with `$ref`s resolved in `doc`), else where it does not.
pub fn check(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    check_at(doc, schema, value, "$")
}

fn check_at(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("{at}: unsupported $ref {reference}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: $ref {reference} names no schema"));
        }
        return check_at(doc, target, value, at);
    }
    if let Some(types) = types(schema)
        && !types.iter().any(|t| is_type(t, value))
    {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(n) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| n < min) {
            return Err(format!("{at}: {value} is below {}", schema["minimum"]));
        }
        if schema["maximum"].as_f64().is_some_and(|max| n > max) {
            return Err(format!("{at}: {value} is above {}", schema["maximum"]));
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check_at(doc, s, value, at)?;
        }
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = schema[key].as_array() {
            let errors: Vec<String> = options
                .iter()
                .filter_map(|s| check_at(doc, s, value, at).err())
                .collect();
            let matched = options.len() - errors.len();
            if matched == 0 || (exactly_one && matched > 1) {
                return Err(format!(
                    "{at}: {matched} of the {key} schemas match {value}: {errors:?}"
                ));
            }
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{at}: required property {name} is missing"));
                }
            }
        }
        let properties = schema["properties"].as_object();
        for (name, v) in object {
            let here = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(s) => check_at(doc, s, v, &here)?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => {
                        return Err(format!("{here}: not a documented property"));
                    }
                    s @ Value::Object(_) => check_at(doc, s, v, &here)?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            check_at(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The schema's `type`, as a list; `None` when it names none (any type).
fn types(schema: &Value) -> Option<Vec<&str>> {
    match &schema["type"] {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn is_type(t: &str, value: &Value) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

#[test]
fn the_checker_refuses_what_it_should() {
    let doc = serde_json::json!({"components": {"schemas": {
        "E": {"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}},
    }}});
    let schema = serde_json::json!({
        "type": "object",
        "required": ["n", "e"],
        "properties": {
            "n": {"type": ["integer", "null"], "minimum": 0},
            "e": {"$ref": "#/components/schemas/E"},
            "k": {"type": "string", "enum": ["a", "b"]},
            "l": {"type": "array", "items": {"type": "boolean"}},
            "o": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/E"}]},
        },
    });
    let ok = serde_json::json!({"n": null, "e": {"code": "x"}, "k": "a", "l": [true], "o": null});
    assert_eq!(check(&doc, &schema, &ok), Ok(()));
    for bad in [
        serde_json::json!({"e": {"code": "x"}}),
        serde_json::json!({"n": -1, "e": {"code": "x"}}),
        serde_json::json!({"n": 1.5, "e": {"code": "x"}}),
        serde_json::json!({"n": 1, "e": {}}),
        serde_json::json!({"n": 1, "e": {"code": "x"}, "k": "c"}),
        serde_json::json!({"n": 1, "e": {"code": "x"}, "l": [1]}),
        serde_json::json!({"n": 1, "e": {"code": "x"}, "o": {"code": 1}}),
    ] {
        assert!(check(&doc, &schema, &bad).is_err(), "{bad}");
    }
}
