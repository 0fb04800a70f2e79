//! Variable references, `{{ vars.slug }}` as the platform writes them:
//! found in a websocket's `url`, `headers` and `auth.jwt.secret`, checked at write, and
//! resolved only when the driven link connects, so a value never sits in
//! a spec, in git or in a bundle.

use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

static REF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{\{\s*vars\.([a-z0-9][a-z0-9-]{0,62})\s*\}\}").expect("a valid pattern")
});

/// The spec keys whose strings may hold references (strings directly, or
/// the values of an object).
pub const FIELDS: [&str; 2] = ["url", "headers"];

/// The slugs a text references, in order, each once.
pub fn refs(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in REF.captures_iter(text) {
        let slug = c[1].to_string();
        if !out.contains(&slug) {
            out.push(slug);
        }
    }
    out
}

/// Every string of the reference fields of a spec.
fn strings(spec: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    for f in FIELDS {
        match spec.get(f) {
            Some(Value::String(s)) => out.push(s.as_str()),
            Some(Value::Object(m)) => out.extend(m.values().filter_map(Value::as_str)),
            _ => {}
        }
    }
    // The key of end users' tokens (auth.mode jwt), a webhook's signing key.
    for key in ["/auth/jwt/secret", "/secret"] {
        if let Some(s) = spec.pointer(key).and_then(Value::as_str) {
            out.push(s);
        }
    }
    out
}

/// The variables a spec uses.
pub fn used_by_spec(spec: &Value) -> BTreeSet<String> {
    strings(spec).into_iter().flat_map(refs).collect()
}

/// Whether `text` is one reference and nothing else (a whole url).
pub fn is_whole_ref(text: &str) -> bool {
    REF.find(text.trim())
        .is_some_and(|m| m.start() == 0 && m.end() == text.trim().len())
}

/// A copy of the spec with each reference replaced by a plain word, for
/// checks of the shape a value will fill (a host, a header value). A url
/// that is one reference stands for a whole URL, checked once filled.
pub fn neutral(spec: &Value) -> Value {
    let mut out = spec.clone();
    for f in FIELDS {
        match out.get_mut(f) {
            Some(Value::String(s)) if f == "url" && is_whole_ref(s) => {
                *s = REF.replace_all(s.trim(), "wss://var-$1").into_owned()
            }
            Some(Value::String(s)) => *s = REF.replace_all(s, "var-$1").into_owned(),
            Some(Value::Object(m)) => {
                for v in m.values_mut() {
                    if let Value::String(s) = v {
                        *s = REF.replace_all(s, "var-$1").into_owned();
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A driven link's url once its references are filled: ws:// or wss://
/// with a host, as the schema asks of a url written out.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(format!("'{url}' is not a ws:// or wss:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{url}' has no host"));
    }
    if url.len() > 2048 {
        return Err("the url is longer than 2048 characters".into());
    }
    Ok(())
}

/// A variable's value as a link uses it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub text: String,
    pub sensitive: bool,
}

/// Fills each reference of `text` from `values` (which hold every slug
/// it references).
pub fn fill(text: &str, values: &HashMap<String, Resolved>) -> String {
    REF.replace_all(text, |c: &regex::Captures<'_>| {
        values
            .get(&c[1])
            .map(|v| v.text.clone())
            .unwrap_or_default()
    })
    .into_owned()
}

/// Whether `text` references a sensitive value of `values`.
pub fn fills_secret(text: &str, values: &HashMap<String, Resolved>) -> bool {
    refs(text)
        .iter()
        .any(|s| values.get(s).is_some_and(|v| v.sensitive))
}

/// Puts the reference back wherever a sensitive value shows in `text`
/// (an error from the peer or the resolver may quote what it was given),
/// in any letter case, and as the host name a URL parser makes of it.
pub fn redact(text: &str, values: &HashMap<String, Resolved>) -> String {
    let mut out = text.to_string();
    for (slug, v) in values {
        if !v.sensitive || v.text.is_empty() {
            continue;
        }
        let reference = format!("{{{{ vars.{slug} }}}}");
        // A host name as a URL parser writes it (IDNA: punycode).
        let host = url::Host::parse(&v.text).ok().map(|h| h.to_string());
        for form in std::iter::once(&v.text).chain(host.as_ref()) {
            if let Ok(re) = regex::RegexBuilder::new(&regex::escape(form))
                .case_insensitive(true)
                .build()
            {
                out = re
                    .replace_all(&out, regex::NoExpand(&reference))
                    .into_owned();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_filled_and_hidden() {
        assert_eq!(
            refs("wss://{{ vars.host }}/x?k={{vars.key}}&again={{ vars.host }}"),
            vec!["host", "key"]
        );
        assert!(refs("{{ vars.Bad }} {{ var.x }} ${var:x}").is_empty());
        let spec = json!({"url": "wss://{{ vars.host }}/feed",
                          "headers": {"Authorization": "Bearer {{ vars.token }}"},
                          "path": "/{{ vars.ignored }}"});
        assert_eq!(
            used_by_spec(&spec).into_iter().collect::<Vec<_>>(),
            vec!["host", "token"]
        );
        let whole = neutral(&json!({"url": " {{ vars.upstream }}"}));
        assert_eq!(whole["url"], "wss://var-upstream");
        assert!(!is_whole_ref("wss://{{ vars.a }}") && !is_whole_ref("{{ vars.a }}{{ vars.b }}"));
        assert!(check_url("wss://example.com/x").is_ok());
        for bad in ["http://example.com/", "example.com", "ws://", ""] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let n = neutral(&spec);
        assert_eq!(n["url"], "wss://var-host/feed");
        assert_eq!(n["headers"]["Authorization"], "Bearer var-token");
        assert_eq!(n["path"], spec["path"]);
        let values = HashMap::from([
            (
                "token".to_string(),
                Resolved {
                    text: "s3cret".into(),
                    sensitive: true,
                },
            ),
            (
                "host".to_string(),
                Resolved {
                    text: "example.com".into(),
                    sensitive: false,
                },
            ),
        ]);
        assert_eq!(fill("Bearer {{ vars.token }}", &values), "Bearer s3cret");
        assert_eq!(
            redact("401 for s3cret at example.com", &values),
            "401 for {{ vars.token }} at example.com"
        );
        assert!(fills_secret("Bearer {{ vars.token }}", &values));
        assert!(!fills_secret("wss://{{ vars.host }}/", &values));
        // Normalised forms of a value are hidden too.
        let values = HashMap::from([(
            "h".to_string(),
            Resolved {
                text: "Feed.Bücher.Example".into(),
                sensitive: true,
            },
        )]);
        assert_eq!(
            redact(
                "feed.bücher.example FEED.BÜCHER.EXAMPLE feed.xn--bcher-kva.example",
                &values
            ),
            "{{ vars.h }} {{ vars.h }} {{ vars.h }}"
        );
    }
}
