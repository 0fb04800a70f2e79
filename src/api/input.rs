//! What a request brings, read with limits and checked: query strings,
//! JSON bodies (objects only), raw bodies and path parameters. Every
//! failure is a 4xx envelope that names what was wrong.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

/// Parses a query string; a bad value names its parameter.
pub fn parse_query<T: DeserializeOwned>(q: &str) -> Result<T> {
    let de = || serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
    // Tracking the path costs on every parse; only a failure needs it, so
    // a failed parse runs again with it to say where.
    if let Ok(v) = T::deserialize(de()) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(de()).map_err(|e| {
        let at = e.path().to_string();
        let message = if at == "." {
            format!("bad query string: {}", e.inner())
        } else {
            format!("query parameter '{at}': {}", e.inner())
        };
        Error::bad_request(ErrorCode::InvalidQuery, message)
    })
}

/// Every query parameter must be one the op declares (its `query`
/// properties in the type's YAML, which OpenAPI lists too): a misspelled
/// `limt` would otherwise be ignored without a word. An op whose query
/// schema sets `additionalProperties` takes others as well (`receive`:
/// the element's own token parameter).
pub fn check_query_names(op: &crate::types::OpDef, query: &str) -> Result<()> {
    if query.is_empty() {
        return Ok(());
    }
    let schema = op.query.as_ref();
    let open = schema
        .and_then(|q| q.get("additionalProperties"))
        .is_some_and(|a| a != &serde_json::Value::Bool(false));
    if open {
        return Ok(());
    }
    let known = schema.and_then(|q| q["properties"].as_object());
    let unknown = form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !known.is_some_and(|k| k.contains_key(name.as_ref())));
    let Some(name) = unknown else {
        return Ok(());
    };
    let takes = match known.filter(|k| !k.is_empty()) {
        Some(k) => format!(
            "{} takes {}",
            op.name,
            k.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => format!("{} takes no query parameters", op.name),
    };
    Err(Error::bad_request(
        ErrorCode::InvalidQuery,
        format!(
            "unknown query parameter '{}'; {takes}",
            crate::error::shown(&name)
        ),
    ))
}

/// Parses an op's JSON body, which must be an object (serde would
/// otherwise take an array for a struct); an empty body reads as `{}`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let body: &[u8] = match first {
        None => b"{}",
        Some(b'{') => body,
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            return Err(Error::bad_request(
                ErrorCode::InvalidBody,
                "request body must be a JSON object",
            ))
        }
        Some(_) => body,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (e.path().to_string(), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (".".to_string(), e)));
    parsed.map_err(|(at, e)| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => Error::bad_request(
                ErrorCode::InvalidJson,
                format!("request body is not valid JSON: {e}"),
            ),
            Category::Data if at != "." => Error::bad_request(
                ErrorCode::InvalidBody,
                format!("request body field '{at}': {e}"),
            ),
            Category::Data => Error::bad_request(
                ErrorCode::InvalidBody,
                format!("request body does not fit this op: {e}"),
            ),
        }
    })
}

/// Reads a request body up to `limit` bytes, within `within`. Bodies are
/// taken as sent: a `Content-Encoding` other than identity is refused,
/// not misread.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<Bytes> {
    if let Some(enc) = headers.get(axum::http::header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(Error::new(
                crate::error::Kind::UnsupportedEncoding,
                crate::error::Class::Validation,
                ErrorCode::UnsupportedEncoding,
                "request bodies are read uncompressed; drop Content-Encoding",
            ));
        }
    }
    // Refused before reading, so a client waiting on `Expect: 100-continue`
    // gets its 413 instead of a go-ahead.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Error::too_large(
            ErrorCode::BodyTooLarge,
            format!("request body is larger than {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        drain_after_refusal(headers, body.into_data_stream());
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    // A body trickled in slowly would hold a connection for ever.
    let read = tokio::time::timeout(within, async {
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(|e| {
                Error::bad_request(
                    ErrorCode::BodyReadFailed,
                    format!("could not read the request body: {e}"),
                )
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    })
    .await;
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            if e.code == "BODY_TOO_LARGE" {
                drain_after_refusal(headers, stream);
            }
            Err(e)
        }
        Err(_) => Err(Error::new(
            crate::error::Kind::TooSlow,
            crate::error::Class::Limit,
            ErrorCode::BodyTimeout,
            format!("the request body did not arrive within {within:?}"),
        )),
    }
}

/// What is read of a refused body after its 413, at most.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// After a 413, reads (and drops) what the client is still sending, up to
/// [`DRAIN_BYTES`] within [`DRAIN_TIME`], so it reads its 413 instead of a
/// broken pipe. A client that waits on `Expect: 100-continue` sends
/// nothing more and is not asked to.
pub fn drain_after_refusal<S, E>(headers: &HeaderMap, mut rest: S)
where
    S: futures::Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
{
    let waits = headers
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits {
        return;
    }
    tokio::spawn(async move {
        let mut seen = 0usize;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(chunk)) = futures::StreamExt::next(&mut rest).await {
                seen += chunk.len();
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// Path parameters, with a malformed path (bad percent-encoding) as a 400
/// envelope rather than axum's plain-text rejection.
pub fn path_params<T>(p: Result<Path<T>, PathRejection>) -> Result<T> {
    p.map(|Path(t)| t)
        .map_err(|e| Error::bad_request(ErrorCode::InvalidPath, e.body_text()))
}

#[cfg(test)]
mod tests {
    use crate::error_codes::ErrorCode;

    #[derive(Debug, serde::Deserialize)]
    struct Params {
        limit: Option<i64>,
        room: Option<String>,
    }

    /// Parsed without the path tracker; a failure still names its parameter.
    #[test]
    fn a_query_parses_and_a_bad_value_names_its_parameter() {
        let p: Params = super::parse_query("room=lob%20by&limit=5").unwrap();
        assert_eq!((p.limit, p.room.as_deref()), (Some(5), Some("lob by")));
        let p: Params = super::parse_query("").unwrap();
        assert_eq!((p.limit, p.room), (None, None));
        let e = super::parse_query::<Params>("room=x&limit=many").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidQuery);
        assert!(
            e.message.starts_with("query parameter 'limit': "),
            "{}",
            e.message
        );
    }
}
