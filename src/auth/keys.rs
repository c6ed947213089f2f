//! Public keys for tokens an identity provider signs (RS256, ES256, EdDSA,
//! and the other RSA and EC algorithms a JWKS may name), loaded once at
//! start from PEM files (`--token-public-key`) and JWKS files
//! (`--token-jwks`), and the pure rule that picks which key may check a
//! token.
//!
//! The algorithm is the key's, never the token's alone: a PEM key verifies
//! the one algorithm of its type (RSA: RS256, P-256: ES256, P-384: ES384,
//! Ed25519: EdDSA), a JWK the `alg` it names (or its type's). A token's
//! `alg` header only chooses among the keys that have that algorithm, and
//! HS256 always goes to the server's secret, never to a public key: a token
//! "signed" with a public key's bytes as an HMAC secret (algorithm
//! confusion) is checked against the secret and fails. `alg: none` is not
//! an algorithm jsonwebtoken knows, so such a token never gets this far.
//!
//! Files are read at start only: rotating their keys means updating the
//! file and restarting (each node in turn). A file that cannot be read, or
//! holds anything but public keys of a supported type, stops the start
//! with a message naming it. A provider's JWKS URL (`--token-jwks-url`)
//! is fetched instead, and again when it rotates (`remote.rs`); both end
//! up in one [`super::ring::KeyRing`].

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::material::Material;
use super::{der, jwks};

/// One key that verifies tokens of one algorithm.
#[derive(Clone)]
pub struct PublicKey {
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    /// The JWK's `kid`; PEM keys have none.
    pub kid: Option<String>,
    /// Where it came from, for the start-up log: the file (and the key's
    /// place in a JWKS).
    pub source: String,
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("source", &self.source)
            .finish()
    }
}

impl PublicKey {
    /// A key from checked material; `alg` must fit it.
    pub(crate) fn new(material: &Material, alg: Algorithm, kid: Option<String>, source: String) -> Self {
        debug_assert!(material.fits(alg));
        PublicKey {
            alg,
            kid,
            source,
            key: material.decoding_key(),
            validation: validation(alg),
        }
    }

    /// The same key, refusing tokens whose `aud` names none of `audience`
    /// or whose `iss` is not one of `issuer` (each only when not empty):
    /// a provider that signs tokens for several applications signs them
    /// all with the same keys.
    pub fn expecting(mut self, audience: &[String], issuer: &[String]) -> Self {
        let mut required = vec!["exp"];
        if !audience.is_empty() {
            self.validation.set_audience(audience);
            self.validation.validate_aud = true;
            required.push("aud");
        }
        if !issuer.is_empty() {
            self.validation.set_issuer(issuer);
            required.push("iss");
        }
        // Expected claims must be there: a token without `aud` is not
        // one for this audience.
        self.validation.set_required_spec_claims(&required);
        self
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// The checks of a token of this key: its algorithm only, `exp`
    /// required, `nbf` honoured, no leeway.
    pub fn validation(&self) -> &Validation {
        &self.validation
    }
}

/// How every token is checked, whichever key signed it: only `alg`, no
/// leeway, `exp` required, `nbf` honoured. Tokens minted by other backends
/// or by an identity provider may carry an audience; pollcast has none of
/// its own to check it against.
pub fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

/// The keys of one `--token-jwks` file.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub keys: Vec<PublicKey>,
}

/// `--token-public-key FILE`: the one public key of a PEM file.
pub fn load_pem_file(path: &str) -> Result<PublicKey, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let material = pem_material(&text).map_err(|e| format!("{path}: {e}"))?;
    Ok(PublicKey::new(
        &material,
        material.default_alg(),
        None,
        path.to_string(),
    ))
}

/// The checked key of a PEM text holding exactly one public key (or
/// certificate).
pub(crate) fn pem_material(text: &[u8]) -> Result<Material, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not a PEM file ({e})"))?;
    let block = match blocks.as_slice() {
        [one] => one,
        [] => return Err("not a PEM file: no -----BEGIN PUBLIC KEY----- block in it".into()),
        many => {
            return Err(format!(
                "{} PEM blocks in it: give one key per file (--token-public-key is repeatable)",
                many.len()
            ))
        }
    };
    let material = match block.tag() {
        "PUBLIC KEY" => der::subject_public_key_info(block.contents()),
        "RSA PUBLIC KEY" => der::rsa_public_key(block.contents()),
        "CERTIFICATE" => der::certificate(block.contents()),
        tag if tag.contains("PRIVATE KEY") => Err(format!(
            "a {tag}: give its public half (openssl pkey -in KEY -pubout)"
        )),
        tag => Err(format!("a PEM {tag} block is not a public key")),
    }?;
    material.check()?;
    Ok(material)
}

/// `--token-jwks FILE`: the signing keys of a JSON Web Key Set.
pub fn load_jwks_file(path: &str) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    jwks_keys(&text, path)
}

/// The signing keys of a JWKS text read from `origin` (a file or a URL,
/// named in each key's `source` and in the error).
pub fn jwks_keys(text: &str, origin: &str) -> Result<KeySet, String> {
    let keys = jwks::parse(text)
        .map_err(|e| format!("{origin}: {e}"))?
        .into_iter()
        .map(|key| {
            let source = match &key.kid {
                Some(kid) => format!("{origin} (kid {kid:?})"),
                None => format!("{origin} (key {})", key.index + 1),
            };
            PublicKey::new(&key.material, key.alg, key.kid, source)
        })
        .collect();
    Ok(KeySet { keys })
}

/// Which key checks a token, from its header.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    /// HS256: the server's secret, never a public key.
    Secret,
    /// These public keys (indexes), tried in order until one verifies.
    Keys(Vec<usize>),
}

/// The keys that may check a token whose header says `alg` and `kid`.
///
/// - HS256 goes to the secret; HS384 and HS512 are refused.
/// - With a `kid` that some key has: those keys, if they have the token's
///   algorithm (a `kid` naming a key of another algorithm is refused).
/// - With a `kid` no key has, or no `kid`: the keys of the token's
///   algorithm without a `kid` of their own (PEM keys), plus, without a
///   `kid`, every key of that algorithm.
pub fn pick(keys: &[PublicKey], alg: Algorithm, kid: Option<&str>) -> Result<Pick, &'static str> {
    match alg {
        Algorithm::HS256 => return Ok(Pick::Secret),
        Algorithm::HS384 | Algorithm::HS512 => return Err("only HS256 is accepted with the server's secret"),
        _ => {}
    }
    let named = |key: &PublicKey| kid.is_some() && key.kid.as_deref() == kid;
    let chosen: Vec<usize> = if keys.iter().any(named) {
        let chosen: Vec<usize> = indexes(keys, |key| named(key) && key.alg == alg);
        if chosen.is_empty() {
            return Err("the token's alg is not the algorithm of the key its kid names");
        }
        chosen
    } else {
        indexes(keys, |key| key.alg == alg && (kid.is_none() || key.kid.is_none()))
    };
    if chosen.is_empty() {
        return Err("no key of this server verifies the token's alg and kid");
    }
    Ok(Pick::Keys(chosen))
}

fn indexes(keys: &[PublicKey], keep: impl Fn(&PublicKey) -> bool) -> Vec<usize> {
    keys.iter()
        .enumerate()
        .filter(|(_, key)| keep(key))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::material::Curve;
    use super::*;

    fn key(alg: Algorithm, kid: Option<&str>) -> PublicKey {
        let material = match alg {
            Algorithm::EdDSA => Material::Ed25519 { x: vec![1; 32] },
            Algorithm::ES256 => Material::Ec {
                curve: Curve::P256,
                point: [vec![4], vec![1; 64]].concat(),
            },
            _ => Material::Rsa {
                n: vec![0xC1; 256],
                e: vec![1, 0, 1],
            },
        };
        PublicKey::new(&material, alg, kid.map(String::from), "test".into())
    }

    #[test]
    fn hs256_goes_to_the_secret_even_when_only_public_keys_are_loaded() {
        // Given only an RSA key, when a token says HS256 (a public key's
        // bytes used as an HMAC secret), then only the secret checks it.
        let keys = [key(Algorithm::RS256, None)];
        assert_eq!(pick(&keys, Algorithm::HS256, None), Ok(Pick::Secret));
        assert_eq!(pick(&keys, Algorithm::HS256, Some("k1")), Ok(Pick::Secret));
        assert!(pick(&keys, Algorithm::HS512, None).is_err());
    }

    #[test]
    fn a_kid_picks_its_key_and_its_key_decides_the_algorithm() {
        let keys = [
            key(Algorithm::RS256, Some("rsa")),
            key(Algorithm::EdDSA, Some("ed")),
            key(Algorithm::RS256, Some("rsa-next")),
        ];
        assert_eq!(
            pick(&keys, Algorithm::RS256, Some("rsa")),
            Ok(Pick::Keys(vec![0]))
        );
        assert_eq!(pick(&keys, Algorithm::EdDSA, Some("ed")), Ok(Pick::Keys(vec![1])));
        // The token claims RS256 but names the Ed25519 key: refused.
        assert!(pick(&keys, Algorithm::RS256, Some("ed")).is_err());
        // An unknown kid, and no PEM key to fall back on.
        assert!(pick(&keys, Algorithm::RS256, Some("gone")).is_err());
    }

    #[test]
    fn without_a_kid_the_keys_of_the_tokens_algorithm_are_tried() {
        let keys = [
            key(Algorithm::RS256, Some("a")),
            key(Algorithm::ES256, None),
            key(Algorithm::RS256, None),
        ];
        assert_eq!(pick(&keys, Algorithm::RS256, None), Ok(Pick::Keys(vec![0, 2])));
        assert_eq!(pick(&keys, Algorithm::ES256, None), Ok(Pick::Keys(vec![1])));
        assert!(pick(&keys, Algorithm::EdDSA, None).is_err());
        assert!(pick(&[], Algorithm::RS256, None).is_err());
    }

    #[test]
    fn a_kid_no_jwk_has_falls_back_to_the_pem_keys_of_its_algorithm() {
        let keys = [key(Algorithm::RS256, Some("a")), key(Algorithm::RS256, None)];
        assert_eq!(pick(&keys, Algorithm::RS256, Some("b")), Ok(Pick::Keys(vec![1])));
        assert!(pick(&keys, Algorithm::ES256, Some("b")).is_err());
    }

    #[test]
    fn a_private_key_or_several_blocks_are_refused_with_a_reason() {
        let private = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(pem_material(private).unwrap_err().contains("-pubout"));
        let two = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n\
                    -----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(pem_material(two).unwrap_err().contains("one key per file"));
        assert!(pem_material(b"hello").is_err());
    }
}
