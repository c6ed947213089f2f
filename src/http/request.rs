//! What every handler needs from a request, parsed the same way everywhere:
//! the trace id, the caller's token, repeated query parameters, and a JSON
//! body under the size limit.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderMap;
use serde::de::DeserializeOwned;
use warp::Filter;

use std::net::IpAddr;

use super::connections::ConnectionInfo;
use super::error::ApiError;
use crate::auth::{AuthError, Caller, TokenKeys};
use crate::domain::event::TraceId;

/// Largest accepted request body (CONTRACT §5).
pub const MAX_BODY: usize = 64 * 1024;

/// Largest request line plus headers, in bytes. hyper may read up to
/// [`READ_BUFFER`]; heads between the two get the contract's 431 from
/// `http::head_limit`, not hyper's bodiless one.
pub const MAX_HEAD: usize = 8 * 1024;
/// hyper's read buffer limit: past it, hyper itself answers 431.
pub const READ_BUFFER: usize = 64 * 1024;

/// About how many bytes the request line and headers took on the wire.
pub fn head_size(method: &http::Method, target_len: usize, headers: &HeaderMap) -> usize {
    let line = method.as_str().len() + 1 + target_len + " HTTP/1.1\r\n".len();
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

/// The one correlation id of a request: the trace id of its `traceparent`
/// header, or a new one. It is in the request's log span, in the events it
/// appends (`traceId`), in its error bodies, and in the [`TRACE_HEADER`] of
/// its response.
pub fn trace_id(headers: &HeaderMap) -> TraceId {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceId::from_traceparent)
        .unwrap_or_else(TraceId::generate)
}

/// The response header that echoes a request's trace id.
pub const TRACE_HEADER: &str = "x-trace-id";

/// The span a request's work is logged in, from its head to the end of its
/// response body (a stream's whole life).
pub fn span(trace_id: &str, method: &str, path: &str) -> tracing::Span {
    tracing::info_span!("request", trace_id, method, path)
}

/// The parsed basics of one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub trace_id: TraceId,
    /// Where the request comes from (behind a trusted proxy, the address
    /// it forwarded); `None` only for requests made without a connection.
    pub client: Option<IpAddr>,
    /// It came on a connection admitted past the node's cap: it may not
    /// open a stream (see `connections`).
    pub headroom: bool,
}

impl RequestContext {
    /// Extracts headers, the query string, the client's address and the
    /// trace id the connection layer gave the request; never rejects.
    pub fn filter() -> impl Filter<Extract = (RequestContext,), Error = std::convert::Infallible> + Clone {
        let query = warp::query::raw().or(warp::any().map(String::new)).unify();
        warp::header::headers_cloned()
            .and(query)
            .and(warp::ext::optional::<ConnectionInfo>())
            .map(
                |headers: HeaderMap, query: String, connection: Option<ConnectionInfo>| match connection {
                    Some(connection) => {
                        let mut ctx = RequestContext::traced(headers, &query, connection.trace_id);
                        ctx.headroom = connection.headroom;
                        ctx.client = Some(connection.client);
                        ctx
                    }
                    None => RequestContext::new(headers, &query),
                },
            )
    }

    /// The same request, known to come from `client`.
    pub fn from_client(mut self, client: IpAddr) -> Self {
        self.client = Some(client);
        self
    }

    /// The context of a request with these headers and raw query string.
    pub fn new(headers: HeaderMap, raw_query: &str) -> RequestContext {
        let trace_id = trace_id(&headers);
        RequestContext::traced(headers, raw_query, trace_id)
    }

    /// The same, with its trace id already known.
    pub fn traced(headers: HeaderMap, raw_query: &str, trace_id: TraceId) -> RequestContext {
        let query = form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect();
        RequestContext {
            headers,
            query,
            trace_id,
            client: None,
            headroom: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a query parameter, in order.
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The single value of a query parameter; given twice is an error.
    pub fn query_one<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, ApiError> {
        let mut values = self.query_all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
        Ok(first)
    }

    /// The bearer token from `Authorization`, or, when `allow_query` (GET
    /// requests: EventSource cannot set headers), from `?access_token=`.
    pub fn bearer(&self, allow_query: bool) -> Result<&str, AuthError> {
        if let Some(value) = self.headers.get(AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| AuthError::Invalid("malformed Authorization header".into()))?;
            // The scheme name is case-insensitive (RFC 9110 §11.1).
            let token = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token)
                .ok_or_else(|| AuthError::Invalid("Authorization must be `Bearer <token>`".into()))?;
            return Ok(token.trim());
        }
        if allow_query {
            if let Some(token) = self.query_all("access_token").next() {
                return Ok(token);
            }
        }
        Err(AuthError::Missing)
    }

    pub fn caller(&self, keys: &TokenKeys, allow_query: bool) -> Result<std::sync::Arc<Caller>, ApiError> {
        Ok(keys.verify(self.bearer(allow_query)?)?)
    }

    /// Refuses a body that is not declared as JSON (415).
    pub fn require_json(&self) -> Result<(), ApiError> {
        let content_type = self.header(CONTENT_TYPE.as_str()).unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/json") {
            Ok(())
        } else {
            Err(ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json",
            ))
        }
    }

    /// Decodes a JSON object body: malformed JSON is a 400, JSON of the
    /// wrong shape a 422. Anything but an object is the wrong shape, even
    /// an array that serde would read field by field into a struct. So is
    /// a NUL character (`\u0000`) in any string or key: Postgres cannot
    /// store it in text or `jsonb`, so it is refused here, on every store
    /// alike, before it can reach a write batch.
    pub fn json<T: DeserializeOwned>(&self, body: &Bytes) -> Result<T, ApiError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::unprocessable("the body must be a JSON object"));
        }
        // A NUL can only be written `\u0000` in valid JSON: look for that
        // first, and walk the value only when it is there.
        let escaped_nul = |i: usize| body.get(i + 1..i + 6) == Some(b"u0000");
        if body
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'\\' && escaped_nul(i))
        {
            if let Some(path) = nul_at(&value) {
                return Err(ApiError::unprocessable(format!(
                    "{path}: text must not contain the NUL character (U+0000)"
                )));
            }
        }
        serde_json::from_value(value).map_err(|e| ApiError::unprocessable(e.to_string()))
    }
}

/// Where the first NUL character is in a JSON value, as a path like
/// `options[2].label` (`body` for the value itself); `None` when there is none.
pub fn nul_at(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &mut String) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let before = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(before);
                }
                found
            }),
            serde_json::Value::Object(fields) => fields.iter().any(|(key, item)| {
                let before = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.replace('\0', "\\u0000"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(before);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then(|| if path.is_empty() { "body".into() } else { path })
}

/// A request body not read yet. Handlers decide who is calling, and
/// whether they may, from the head; only then do they [`Body::read`] it, so
/// an unauthenticated client cannot make the server wait for a body.
pub struct Body {
    declared: Option<u64>,
    chunks: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>,
    max: usize,
    timeout: std::time::Duration,
}

impl Body {
    /// The body, collected up to its size limit (`--max-body`, default
    /// [`MAX_BODY`]; larger bodies are refused without reading the rest,
    /// whether or not they declare a length) within its time limit
    /// (`--body-timeout`; past it, 408 `request_timeout`).
    pub async fn read(self) -> Result<Bytes, ApiError> {
        if self.declared.is_some_and(|n| n > self.max as u64) {
            return Err(too_large(self.max));
        }
        let timeout = self.timeout;
        let mut collect = std::pin::pin!(collect_limited(self.chunks, self.max));
        // Most bodies have arrived with their head: then no timer is set.
        if let Some(collected) = futures::FutureExt::now_or_never(collect.as_mut()) {
            return collected;
        }
        tokio::time::timeout(timeout, collect).await.map_err(|_| {
            ApiError::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(timeout)
                ),
            )
        })?
    }
}

/// The request's [`Body`], unread.
pub fn body(
    max: usize,
    timeout: std::time::Duration,
) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>(CONTENT_LENGTH.as_str())
        .and(warp::body::stream())
        .map(move |declared: Option<u64>, stream| {
            let chunks = futures::StreamExt::map(stream, |chunk: Result<_, warp::Error>| {
                chunk.map(|mut buf| {
                    let n = Buf::remaining(&buf);
                    Buf::copy_to_bytes(&mut buf, n)
                })
            });
            Body {
                declared,
                chunks: Box::pin(chunks),
                max,
                timeout,
            }
        })
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than {max} bytes"),
    )
}

async fn collect_limited<S>(stream: S, max: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, warp::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A JSON response with this status and body.
pub fn json_response(status: http::StatusCode, body: String) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::nul_at;
    use serde_json::json;

    #[test]
    fn a_nul_is_found_wherever_it_hides() {
        assert_eq!(
            nul_at(&json!({"title": "fine", "n": 1, "list": ["a", "b"]})),
            None
        );
        assert_eq!(nul_at(&json!({"title": "a\u{0}b"})).as_deref(), Some("title"));
        assert_eq!(
            nul_at(&json!({"options": [{"label": "x"}, {"label": "\u{0}"}]})).as_deref(),
            Some("options[1].label")
        );
        assert_eq!(nul_at(&json!({"a\u{0}": 1})).as_deref(), Some("a\\u0000"));
        assert_eq!(nul_at(&json!("\u{0}")).as_deref(), Some("body"));
    }
}
