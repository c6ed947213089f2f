//! The numbers of a public key, whether read from a PEM block
//! ([`super::der`]) or a JWK ([`super::jwks`]), and what they allow: the
//! checks ring will make when verifying (sizes, curve, exponent), made at
//! start instead so that a wrong key fails loudly there rather than
//! refusing every token later; the algorithms a key of its type verifies.

use jsonwebtoken::{Algorithm, DecodingKey};

/// An EC curve that ring verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

/// The numbers of a public key, as read from a PEM block or a JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// Modulus and exponent, unsigned big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point `04 || x || y`.
    Ec { curve: Curve, point: Vec<u8> },
    /// The 32-byte public key.
    Ed25519 { x: Vec<u8> },
}

impl Material {
    /// What ring will verify with: a wrong size here would otherwise load
    /// fine and refuse every token.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Material::Rsa { n, e } => {
                let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
                if !(2048..=8192).contains(&bits) {
                    return Err(format!("an RSA key of {bits} bits: 2048 to 8192 are accepted"));
                }
                if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b % 2 == 0) {
                    return Err("an RSA key with a bad public exponent".into());
                }
            }
            Material::Ec { curve, point } => {
                let len = match curve {
                    Curve::P256 => 65,
                    Curve::P384 => 97,
                };
                if point.len() != len || point[0] != 0x04 {
                    return Err("an EC key that is not an uncompressed point of its curve".into());
                }
            }
            Material::Ed25519 { x } if x.len() != 32 => {
                return Err("an Ed25519 key that is not 32 bytes".into())
            }
            Material::Ed25519 { .. } => {}
        }
        Ok(())
    }

    /// The algorithm a key of this type verifies when nothing says which.
    pub fn default_alg(&self) -> Algorithm {
        match self {
            Material::Rsa { .. } => Algorithm::RS256,
            Material::Ec {
                curve: Curve::P256, ..
            } => Algorithm::ES256,
            Material::Ec {
                curve: Curve::P384, ..
            } => Algorithm::ES384,
            Material::Ed25519 { .. } => Algorithm::EdDSA,
        }
    }

    /// Whether a key of this type can verify `alg` (for a JWK's `alg`).
    pub fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Material::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Material::Ec { .. } | Material::Ed25519 { .. } => alg == self.default_alg(),
        }
    }

    pub fn decoding_key(&self) -> DecodingKey {
        match self {
            Material::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
            Material::Ec { point, .. } => DecodingKey::from_ec_der(point),
            Material::Ed25519 { x } => DecodingKey::from_ed_der(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ring_cannot_use_are_refused_when_loaded() {
        let small = Material::Rsa {
            n: vec![0xC1; 128],
            e: vec![1, 0, 1],
        };
        assert!(small.check().unwrap_err().contains("1024 bits"));
        let short_ed = Material::Ed25519 { x: vec![1; 31] };
        assert!(short_ed.check().is_err());
        let compressed = Material::Ec {
            curve: Curve::P256,
            point: [vec![2], vec![1; 32]].concat(),
        };
        assert!(compressed.check().is_err());
        assert!(Material::Ed25519 { x: vec![1; 32] }.fits(Algorithm::EdDSA));
        assert!(!Material::Ed25519 { x: vec![1; 32] }.fits(Algorithm::ES256));
    }
}
