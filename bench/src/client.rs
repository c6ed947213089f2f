//! A small pool of keep-alive HTTP/1.1 connections (hyper's client
//! connections): one request at a time per connection, a new connection
//! when none is idle. Concurrency is bounded by the callers.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::util::Target;

type Sender = SendRequest<Full<Bytes>>;

pub struct Client {
    target: Target,
    host: HeaderValue,
    timeout: Duration,
    idle: Mutex<Vec<Sender>>,
}

/// A finished exchange.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Client {
    pub fn new(target: Target, timeout: Duration) -> Result<Client, String> {
        let host = HeaderValue::from_str(&target.authority).map_err(|e| format!("bad host: {e}"))?;
        Ok(Client {
            target,
            host,
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A request to `path` (or the target's own path), with JSON `body` when
    /// given and a bearer token when given.
    pub fn request(
        &self,
        path: Option<&str>,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path.unwrap_or(&self.target.path))
            .header(HOST, self.host.clone());
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                body
            }
            None => Bytes::new(),
        };
        builder.body(Full::new(body)).expect("a valid request")
    }

    pub fn get(&self, path: &str, bearer: Option<&str>) -> Request<Full<Bytes>> {
        let mut request = self.request(Some(path), bearer, None);
        *request.method_mut() = Method::GET;
        request
    }

    /// Sends the request `build` makes once a connection is ready (so a
    /// timestamp in it is taken as late as possible), within the timeout.
    pub async fn send(&self, build: impl FnOnce() -> Request<Full<Bytes>>) -> Result<Reply, String> {
        match tokio::time::timeout(self.timeout, self.exchange(build)).await {
            Ok(result) => result,
            Err(_) => Err("timeout".into()),
        }
    }

    async fn exchange(&self, build: impl FnOnce() -> Request<Full<Bytes>>) -> Result<Reply, String> {
        let mut sender = self.connection().await?;
        let response = sender
            .send_request(build())
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        if !sender.is_closed() {
            self.idle.lock().expect("pool").push(sender);
        }
        Ok(Reply { status, body })
    }

    async fn connection(&self) -> Result<Sender, String> {
        loop {
            let idle = self.idle.lock().expect("pool").pop();
            let Some(mut sender) = idle else { break };
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// A string field of a JSON object, or an error naming it.
pub fn json_str(value: &serde_json::Value, pointer: &str) -> Result<String, String> {
    value
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("response has no {pointer}: {value}"))
}

/// Parses a reply that must have one of the `ok` statuses as JSON.
pub fn expect_json(
    what: &str,
    reply: Result<Reply, String>,
    ok: &[u16],
) -> Result<serde_json::Value, String> {
    let reply = reply.map_err(|e| format!("{what}: {e}"))?;
    if !ok.contains(&reply.status) {
        return Err(format!(
            "{what}: status {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("{what}: bad JSON: {e}"))
}
