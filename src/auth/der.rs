//! Just enough DER to read a public key out of a PEM file: a
//! SubjectPublicKeyInfo (`PUBLIC KEY`), a PKCS#1 RSA key (`RSA PUBLIC
//! KEY`) or the key of an X.509 certificate (`CERTIFICATE`).
//!
//! Written here rather than left to jsonwebtoken's PEM reader, which takes
//! the first bit string it finds: it cannot tell a P-256 key from a P-384
//! one, nor a private key from a public one, so a wrong file would load
//! and then refuse every token. Reading the structure ourselves lets a bad
//! file fail at start with a message that says what is wrong. The reader
//! is strict (definite lengths, no trailing bytes) and small; it never
//! checks a certificate's signature or dates, only takes its key.

use super::material::{Curve, Material};

/// One DER element: its tag byte and its contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
/// `[0] EXPLICIT`: a certificate's optional version.
const CONTEXT_0: u8 = 0xA0;

const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const SECP384R1: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x2B, 0x65, 0x70];

/// Reads the element at the start of `input`; returns it and what follows.
fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let malformed = || "malformed DER".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(malformed)?;
    let (&first, rest) = rest.split_first().ok_or_else(malformed)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7F) as usize;
        // 0x80 is BER's indefinite length, which DER forbids.
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed());
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(malformed());
    }
    let (body, rest) = rest.split_at(len);
    Ok((Tlv { tag, body }, rest))
}

/// Reads an element that must have this tag.
fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (tlv, rest) = read(input)?;
    if tlv.tag != tag {
        return Err(format!("malformed DER: expected {what}"));
    }
    Ok((tlv.body, rest))
}

/// Reads the one element `input` holds, which must have this tag.
fn only<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], String> {
    let (body, rest) = expect(input, tag, what)?;
    if !rest.is_empty() {
        return Err("malformed DER: trailing bytes".into());
    }
    Ok(body)
}

/// A `PUBLIC KEY` block: SubjectPublicKeyInfo.
pub fn subject_public_key_info(der: &[u8]) -> Result<Material, String> {
    spki_body(only(der, SEQUENCE, "a SEQUENCE")?)
}

/// An `RSA PUBLIC KEY` block: PKCS#1 RSAPublicKey.
pub fn rsa_public_key(der: &[u8]) -> Result<Material, String> {
    let body = only(der, SEQUENCE, "an RSAPublicKey SEQUENCE")?;
    let (n, rest) = expect(body, INTEGER, "the RSA modulus")?;
    let e = only(rest, INTEGER, "the RSA exponent")?;
    Ok(Material::Rsa {
        n: unsigned(n)?,
        e: unsigned(e)?,
    })
}

/// A `CERTIFICATE` block: the key of its subject (tbsCertificate's
/// seventh field, or sixth without a version).
pub fn certificate(der: &[u8]) -> Result<Material, String> {
    let (cert, _) = expect(der, SEQUENCE, "a Certificate SEQUENCE")?;
    let (mut tbs, _) = expect(cert, SEQUENCE, "a TBSCertificate SEQUENCE")?;
    let (first, _) = read(tbs)?;
    if first.tag == CONTEXT_0 {
        tbs = read(tbs)?.1;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        tbs = read(tbs)?.1;
    }
    let (spki, _) = expect(tbs, SEQUENCE, "the certificate's SubjectPublicKeyInfo")?;
    spki_body(spki)
}

fn spki_body(body: &[u8]) -> Result<Material, String> {
    let (algorithm, rest) = expect(body, SEQUENCE, "an AlgorithmIdentifier")?;
    let bits = only(rest, BIT_STRING, "the key's BIT STRING")?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("malformed DER: the key's BIT STRING".into()),
    };
    let (oid, params) = expect(algorithm, OID, "the key's algorithm")?;
    match oid {
        RSA_ENCRYPTION => rsa_public_key(key),
        EC_PUBLIC_KEY => {
            let curve = match only(params, OID, "the curve of an EC key")? {
                PRIME256V1 => Curve::P256,
                SECP384R1 => Curve::P384,
                _ => return Err("an EC key on a curve other than P-256 or P-384".into()),
            };
            Ok(Material::Ec {
                curve,
                point: key.to_vec(),
            })
        }
        ED25519 => Ok(Material::Ed25519 { x: key.to_vec() }),
        _ => Err("not an RSA, EC or Ed25519 key".into()),
    }
}

/// A DER INTEGER as unsigned big-endian bytes, without leading zeros.
fn unsigned(integer: &[u8]) -> Result<Vec<u8>, String> {
    if integer.first().is_some_and(|b| b & 0x80 != 0) {
        return Err("malformed DER: a negative RSA number".into());
    }
    let start = integer.iter().position(|&b| b != 0).unwrap_or(integer.len());
    Ok(integer[start..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_short_and_long_read_and_truncation_is_refused() {
        let (tlv, rest) = read(&[0x04, 0x02, 0xAA, 0xBB, 0xCC]).unwrap();
        assert_eq!((tlv.tag, tlv.body, rest), (0x04, &[0xAA, 0xBB][..], &[0xCC][..]));
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 128]);
        assert_eq!(read(&long).unwrap().0.body.len(), 128);
        assert!(read(&[0x04, 0x05, 1, 2]).is_err());
        assert!(read(&[0x30, 0x80, 0, 0]).is_err(), "indefinite length is BER");
        assert!(read(&[]).is_err());
    }

    #[test]
    fn an_ed25519_public_key_info_gives_its_32_bytes() {
        // openssl genpkey -algorithm ed25519 | openssl pkey -pubout -outform DER
        let mut der = vec![
            0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend([9u8; 32]);
        match subject_public_key_info(&der).unwrap() {
            Material::Ed25519 { x } => assert_eq!(x, vec![9u8; 32]),
            other => panic!("{other:?}"),
        }
        der.push(0);
        assert!(subject_public_key_info(&der).is_err(), "trailing bytes");
    }

    #[test]
    fn an_rsa_key_loses_its_sign_byte() {
        let der = [0x30, 0x08, 0x02, 0x03, 0x00, 0xC1, 0x01, 0x02, 0x01, 0x03];
        match rsa_public_key(&der).unwrap() {
            Material::Rsa { n, e } => assert_eq!((n, e), (vec![0xC1, 0x01], vec![0x03])),
            other => panic!("{other:?}"),
        }
        assert!(rsa_public_key(&[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x03]).is_err());
    }
}
