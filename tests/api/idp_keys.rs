//! An identity provider made with `openssl`, for the token tests: key
//! pairs (RSA 2048, EC P-256, Ed25519) made at test time, JWTs signed by
//! `openssl` itself (not by pollcast's code or its JWT library), JWKs
//! built from openssl's own output, and the claims a provider puts in a
//! token.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pollcast::auth::unix_now;
use serde_json::{json, Value};

use crate::helpers::{data, TestApp};

/// A scratch directory for keys and signatures, removed afterwards.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("pollcast-idp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A private key made by `openssl genpkey`, and its public half (PEM).
    pub fn keypair(&self, name: &str, kind: Kind) -> KeyPair {
        let private = self.path(&format!("{name}.key"));
        let public = self.path(&format!("{name}.pub"));
        let mut args = vec!["genpkey", "-out", private.to_str().unwrap()];
        args.extend(match kind {
            Kind::Rsa => ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"].as_slice(),
            Kind::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Kind::Ed25519 => &["-algorithm", "ed25519"],
        });
        openssl(&args);
        openssl(&["pkey", "-in", s(&private), "-pubout", "-out", s(&public)]);
        KeyPair {
            kind,
            private,
            public,
        }
    }

    /// A JWT signed by openssl with `key`, its header being `header`.
    pub fn sign(&self, key: &KeyPair, header: Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let message = self.path(&format!("message-{}", uuid::Uuid::new_v4().simple()));
        let signature = self.path(&format!("signature-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&message, &input).unwrap();
        let (m, sig, k) = (s(&message), s(&signature), s(&key.private));
        match key.kind {
            Kind::Rsa | Kind::P256 => openssl(&["dgst", "-sha256", "-sign", k, "-out", sig, m]),
            Kind::Ed25519 => openssl(&["pkeyutl", "-sign", "-inkey", k, "-rawin", "-in", m, "-out", sig]),
        };
        let mut bytes = std::fs::read(&signature).unwrap();
        if key.kind == Kind::P256 {
            bytes = ecdsa_der_to_raw(&bytes);
        }
        format!("{input}.{}", b64(bytes))
    }

    /// The JWK of a public key, built from openssl's own output.
    pub fn jwk(&self, key: &KeyPair, kid: &str) -> Value {
        let public = s(&key.public);
        match key.kind {
            Kind::Rsa => {
                let modulus = openssl(&["rsa", "-pubin", "-in", public, "-modulus", "-noout"]);
                let modulus = String::from_utf8(modulus).unwrap();
                let hex = modulus.trim().strip_prefix("Modulus=").expect("Modulus=");
                let text =
                    String::from_utf8(openssl(&["rsa", "-pubin", "-in", public, "-text", "-noout"])).unwrap();
                let exponent: u64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Exponent: "))
                    .and_then(|l| l.split_whitespace().next())
                    .expect("Exponent:")
                    .parse()
                    .unwrap();
                let e: Vec<u8> = exponent
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|&b| b == 0)
                    .collect();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(hex::decode(hex).unwrap()), "e": b64(e)})
            }
            Kind::P256 => {
                let der = openssl(&["pkey", "-pubin", "-in", public, "-outform", "DER"]);
                let point = &der[der.len() - 65..];
                assert_eq!(point[0], 4, "an uncompressed point ends the DER");
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Kind::Ed25519 => {
                let der = openssl(&["pkey", "-pubin", "-in", public, "-outform", "DER"]);
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64(&der[der.len() - 32..])})
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rsa,
    P256,
    Ed25519,
}

pub struct KeyPair {
    pub kind: Kind,
    pub private: PathBuf,
    pub public: PathBuf,
}

impl KeyPair {
    pub fn alg(&self) -> &'static str {
        match self.kind {
            Kind::Rsa => "RS256",
            Kind::P256 => "ES256",
            Kind::Ed25519 => "EdDSA",
        }
    }
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Runs openssl; panics with its error output unless it succeeds.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line tool is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// An ECDSA-Sig-Value (SEQUENCE of two INTEGERs) as JWS wants it: r || s,
/// 32 bytes each.
pub fn ecdsa_der_to_raw(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "a SEQUENCE");
    let mut rest = &der[2..];
    let mut raw = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest[0], 0x02, "an INTEGER");
        let len = rest[1] as usize;
        let number = &rest[2..2 + len];
        let number = &number[number.iter().position(|&b| b != 0).unwrap_or(len)..];
        raw.extend(std::iter::repeat_n(0u8, 32 - number.len()));
        raw.extend_from_slice(number);
        rest = &rest[2 + len..];
    }
    raw
}

/// What an identity provider puts in a token: its own claims (`iss`,
/// `aud`, a `role` of its own, as Supabase does) beside pollcast's.
pub fn claims(sub: &str, jti: &str, exp: u64) -> Value {
    json!({
        "iss": "https://idp.example.org/",
        "aud": ["pollcast", "other-api"],
        "sub": sub,
        "role": "authenticated",
        "sid": "idp-session-1",
        "iat": unix_now(),
        "exp": exp,
        "jti": jti,
        "publish": ["idp:*"],
        "subscribe": ["idp:*"],
    })
}

pub fn in_an_hour() -> u64 {
    unix_now() + 3600
}

/// Status and error body (without its trace id) of `GET /v1/events` with
/// this token.
pub async fn open(app: &TestApp, token: &str) -> (u16, Value) {
    let response = app
        .http
        .get(app.url("/v1/events?topic=idp:news"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        return (status, Value::Null);
    }
    let mut error = response.json::<Value>().await.unwrap()["error"].take();
    error.as_object_mut().map(|e| e.remove("traceId"));
    (status, error)
}

/// Opens a stream with `token`, publishes with it, and sees the event.
pub async fn streams_and_publishes(app: &TestApp, token: &str, topic: &str) {
    let mut stream = app.subscribe_with(token, &["idp:*"], None).await;
    assert_eq!(stream.next().await.event, "connection:established");
    let response = app
        .publish_raw(
            token,
            topic,
            json!({"type": "note:posted", "payload": {"by": topic}}),
        )
        .await;
    assert_eq!(
        response.status(),
        201,
        "{topic}: {}",
        response.text().await.unwrap()
    );
    let event = stream.next_stored().await;
    assert_eq!(data(&event)["payload"]["by"], topic);
}
