//! Reading a JSON Web Key Set (RFC 7517), as an identity provider
//! publishes at its `jwks_uri`, saved to a file: its signing keys.
//!
//! Read with a tolerant struct of our own rather than jsonwebtoken's
//! `JwkSet`, which refuses a whole set for one key type it does not know:
//! a provider's set may hold encryption keys beside its signing keys.
//! Keys meant for encryption (`use: enc`, or a JWE `alg` such as
//! `RSA-OAEP`) are skipped; any other key pollcast cannot verify with
//! (a symmetric `oct` key, an unknown curve or algorithm, a bad number)
//! fails the whole file, naming the key, so nothing is silently ignored.

use std::str::FromStr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::material::{Curve, Material};

/// A signing key of the set.
#[derive(Debug)]
pub struct Jwk {
    /// Its place in the file's `keys` (from 0).
    pub index: usize,
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub material: Material,
}

#[derive(Deserialize)]
struct Set {
    keys: Vec<serde_json::Value>,
}

/// The members of a JWK pollcast reads; the others are ignored.
#[derive(Deserialize)]
struct Raw {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The signing keys of a JWKS text (`{"keys": [...]}`).
pub fn parse(text: &str) -> Result<Vec<Jwk>, String> {
    let set: Set = serde_json::from_str(text)
        .map_err(|e| format!("not a JWKS (a JSON object with a \"keys\" array): {e}"))?;
    let mut keys = Vec::new();
    for (index, value) in set.keys.into_iter().enumerate() {
        let named = |why: String, kid: Option<&str>| match kid {
            Some(kid) => format!("key {} (kid {kid:?}): {why}", index + 1),
            None => format!("key {}: {why}", index + 1),
        };
        let raw: Raw = serde_json::from_value(value).map_err(|e| named(e.to_string(), None))?;
        if let Some(key) = signing_key(&raw).map_err(|e| named(e, raw.kid.as_deref()))? {
            keys.push(Jwk {
                index,
                kid: raw.kid,
                alg: key.0,
                material: key.1,
            });
        }
    }
    if keys.is_empty() {
        return Err("no signing key in it".into());
    }
    Ok(keys)
}

/// A JWK's algorithm and numbers, or `None` for an encryption key.
fn signing_key(raw: &Raw) -> Result<Option<(Algorithm, Material)>, String> {
    if raw.usage.as_deref() == Some("enc") || raw.alg.as_deref().is_some_and(is_encryption_alg) {
        return Ok(None);
    }
    let field = |value: &Option<String>, name: &str| -> Result<Vec<u8>, String> {
        let text = value.as_deref().ok_or_else(|| format!("no \"{name}\""))?;
        base64url(text).map_err(|_| format!("\"{name}\" is not base64url"))
    };
    let material = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => Material::Rsa {
            n: strip_zeros(field(&raw.n, "n")?),
            e: strip_zeros(field(&raw.e, "e")?),
        },
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (curve, size) = match crv {
                "P-256" => (Curve::P256, 32),
                _ => (Curve::P384, 48),
            };
            let (x, y) = (field(&raw.x, "x")?, field(&raw.y, "y")?);
            if x.len() != size || y.len() != size {
                return Err(format!("x and y of a {crv} key are {size} bytes each"));
            }
            Material::Ec {
                curve,
                point: [&[4u8][..], &x, &y].concat(),
            }
        }
        ("OKP", Some("Ed25519")) => Material::Ed25519 {
            x: field(&raw.x, "x")?,
        },
        ("oct", _) => {
            return Err("a symmetric (oct) key: HS256 tokens are checked with --token-secret".into())
        }
        (kty, crv) => {
            return Err(format!(
                "unsupported key type {kty:?}{}: RSA, EC (P-256, P-384) and OKP (Ed25519) are",
                crv.map(|c| format!(" on curve {c:?}")).unwrap_or_default()
            ))
        }
    };
    material.check()?;
    let alg = match raw.alg.as_deref() {
        None => material.default_alg(),
        Some(name) => {
            let alg = Algorithm::from_str(name).map_err(|_| format!("unsupported alg {name:?}"))?;
            if !material.fits(alg) {
                return Err(format!("alg {name:?} does not fit a key of type {:?}", raw.kty));
            }
            alg
        }
    };
    Ok(Some((alg, material)))
}

/// JWE key-management algorithms (RFC 7518 §4.1): keys for encryption.
fn is_encryption_alg(alg: &str) -> bool {
    alg == "dir"
        || alg == "RSA1_5"
        || alg.starts_with("RSA-OAEP")
        || alg.starts_with("ECDH-ES")
        || (alg.starts_with('A') && alg.contains("KW"))
        || alg.starts_with("PBES2")
}

/// base64url, with or without padding (RFC 7515 says without).
fn base64url(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(text)
}

fn strip_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn signing_keys_are_read_and_encryption_keys_skipped() {
        let text = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&[7; 32])},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "alg": "ES256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "alg": "PS256", "n": b64(&[0xC1; 256]), "e": "AQAB", "kid": "r"},
        ]})
        .to_string();
        let keys = parse(&text).unwrap();
        let seen: Vec<_> = keys.iter().map(|k| (k.index, k.kid.as_deref(), k.alg)).collect();
        assert_eq!(
            seen,
            [
                (0, Some("ed"), Algorithm::EdDSA),
                (2, None, Algorithm::ES256),
                (4, Some("r"), Algorithm::PS256)
            ]
        );
    }

    #[test]
    fn a_key_pollcast_cannot_use_fails_the_file_naming_the_key() {
        let cases = [
            (
                serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "s"}),
                "--token-secret",
            ),
            (
                serde_json::json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
                "P-521",
            ),
            (
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "RS256", "x": b64(&[7; 32])}),
                "does not fit",
            ),
            (
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "not base64!"}),
                "base64url",
            ),
            (
                serde_json::json!({"kty": "RSA", "n": b64(&[0xC1; 64]), "e": "AQAB"}),
                "512 bits",
            ),
            (
                serde_json::json!({"kty": "RSA", "alg": "HS256", "n": b64(&[0xC1; 256]), "e": "AQAB"}),
                "does not fit",
            ),
        ];
        for (key, why) in cases {
            let text = serde_json::json!({"keys": [key]}).to_string();
            let error = parse(&text).unwrap_err();
            assert!(error.starts_with("key 1") && error.contains(why), "{error}");
        }
        assert!(parse("{}").unwrap_err().contains("JWKS"));
        assert!(parse(r#"{"keys": []}"#).unwrap_err().contains("no signing key"));
    }
}
