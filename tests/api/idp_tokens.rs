//! Tokens from an identity provider: keys made by `openssl` at test time
//! (RSA 2048, EC P-256, Ed25519), tokens signed by `openssl` too, loaded
//! from PEM files and from a JWKS built out of openssl's output. What a
//! provider's user relies on: such a token streams and publishes like an
//! HS256 one; a token of another key, `alg: none`, an HS256 token "signed"
//! with the public key, or an expired one is refused with 401; revocation
//! applies; a key file pollcast cannot use stops the start, naming it.

use std::process::Command;

use pollcast::auth::keys::{load_jwks_file, load_pem_file};
use pollcast::auth::unix_now;
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::idp_keys::{b64, claims, in_an_hour, open, openssl, s, streams_and_publishes, Kind, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signed_by_openssl_keys_stream_and_publish_without_a_secret() {
    // Given an RSA, an EC P-256 and an Ed25519 key made by openssl, their
    // public halves given as PEM files, and no HS256 secret at all.
    let scratch = Scratch::new();
    let pairs = [
        scratch.keypair("rsa", Kind::Rsa),
        scratch.keypair("ec", Kind::P256),
        scratch.keypair("ed", Kind::Ed25519),
    ];
    let keys: Vec<_> = pairs
        .iter()
        .map(|p| load_pem_file(s(&p.public)).unwrap())
        .collect();
    let app = TestApp::spawn_with(Backend::Memory, |config| {
        config.token_secret = None;
        config.token_public_keys = keys;
        config.admin_key = Some("admin-key".into());
    })
    .await;

    // When each signs a token with openssl, then it streams and publishes.
    for pair in &pairs {
        let token = scratch.sign(
            pair,
            json!({"alg": pair.alg(), "typ": "JWT"}),
            &claims("ann", &format!("jti-{}", pair.alg()), in_an_hour()),
        );
        streams_and_publishes(&app, &token, &format!("idp:{}", pair.alg().to_lowercase())).await;
    }

    // A token of the helpers' HS256 secret means nothing to this server.
    assert_eq!(open(&app, &app.demo_token()).await.0, 401);

    // Revocation applies: revoking one jti refuses that token only.
    let rsa = &pairs[0];
    let doomed = scratch.sign(
        rsa,
        json!({"alg": "RS256"}),
        &claims("bob", "doomed", in_an_hour()),
    );
    let spared = scratch.sign(
        rsa,
        json!({"alg": "RS256"}),
        &claims("bob", "spared", in_an_hour()),
    );
    assert_eq!(open(&app, &doomed).await.0, 200);
    let revoked = app
        .http
        .post(app.url("/v1/admin/revocations"))
        .header("X-Admin-Key", "admin-key")
        .json(&json!({"jti": "doomed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 201);
    let (status, error) = open(&app, &doomed).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("token_revoked")));
    assert_eq!(open(&app, &spared).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_confused_unsigned_and_expired_tokens_are_refused_like_a_bad_hs256_token() {
    let scratch = Scratch::new();
    let rsa = scratch.keypair("rsa", Kind::Rsa);
    let ed = scratch.keypair("ed", Kind::Ed25519);
    let stranger_rsa = scratch.keypair("stranger-rsa", Kind::Rsa);
    let stranger_ed = scratch.keypair("stranger-ed", Kind::Ed25519);
    // The RSA key as providers often hand it out: in an X.509 certificate.
    let certificate = scratch.path("rsa-cert.pem");
    let (key, cert) = (s(&rsa.private), s(&certificate));
    openssl(&[
        "req", "-x509", "-new", "-key", key, "-subj", "/CN=idp", "-days", "1", "-out", cert,
    ]);
    let keys = vec![
        load_pem_file(cert).unwrap(),
        load_pem_file(s(&ed.public)).unwrap(),
    ];
    let app = TestApp::spawn_with(Backend::Memory, |config| config.token_public_keys = keys).await;
    let good = claims("ann", "j1", in_an_hour());

    // The reference: an HS256 token signed with another secret.
    let bad_hs256 = pollcast::auth::TokenKeys::new(b"not-the-secret").mint(&pollcast::auth::Claims {
        sub: Some("ann".into()),
        exp: in_an_hour(),
        subscribe: vec!["idp:*".into()],
        ..Default::default()
    });
    let reference = open(&app, &bad_hs256).await;
    assert_eq!(
        (reference.0, reference.1["code"].as_str()),
        (401, Some("unauthorized"))
    );

    // Signed by keys the server does not have: exactly that 401.
    for (stranger, alg) in [(&stranger_rsa, "RS256"), (&stranger_ed, "EdDSA")] {
        let forged = scratch.sign(stranger, json!({"alg": alg}), &good);
        let (status, error) = open(&app, &forged).await;
        assert_eq!((status, &error["code"]), (401, &reference.1["code"]), "{alg}");
        assert_eq!(error["message"], reference.1["message"], "{alg}");
    }

    // Algorithm confusion: HS256 with the RSA public key's PEM bytes as
    // the HMAC secret (computed by openssl), and with its DER bytes.
    let pem = std::fs::read(&rsa.public).unwrap();
    let der = openssl(&["pkey", "-pubin", "-in", s(&rsa.public), "-outform", "DER"]);
    for secret in [pem, der] {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "typ": "JWT"}).to_string()),
            b64(good.to_string())
        );
        let message = scratch.path("confused");
        std::fs::write(&message, &input).unwrap();
        let hexkey = format!("hexkey:{}", hex::encode(&secret));
        let mac = openssl(&[
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            &hexkey,
            "-binary",
            s(&message),
        ]);
        let confused = format!("{input}.{}", b64(mac));
        assert_eq!(open(&app, &confused).await, reference);
    }

    // The token's alg must be its key's: an EdDSA signature under an RS256
    // header, and the RSA key's signature under an ES256 header.
    let ed_as_rsa = scratch.sign(&ed, json!({"alg": "RS256"}), &good);
    assert_eq!(open(&app, &ed_as_rsa).await.0, 401);
    let rsa_as_ec = scratch.sign(&rsa, json!({"alg": "ES256"}), &good);
    assert_eq!(open(&app, &rsa_as_ec).await.0, 401);

    // alg: none, with and without a signature.
    let unsigned_input = format!(
        "{}.{}",
        b64(json!({"alg": "none"}).to_string()),
        b64(good.to_string())
    );
    for unsigned in [
        format!("{unsigned_input}."),
        format!("{unsigned_input}.{}", b64("x")),
    ] {
        let (status, error) = open(&app, &unsigned).await;
        assert_eq!((status, error["code"].as_str()), (401, Some("unauthorized")));
    }

    // Expired, and not yet valid: 401 too, expired saying so.
    let expired = scratch.sign(
        &rsa,
        json!({"alg": "RS256"}),
        &claims("ann", "old", unix_now() - 10),
    );
    let (status, error) = open(&app, &expired).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("token_expired")));
    let mut early = good.clone();
    early["nbf"] = json!(unix_now() + 600);
    let early = scratch.sign(&ed, json!({"alg": "EdDSA"}), &early);
    assert_eq!(open(&app, &early).await.0, 401);

    // And the genuine ones still pass, the provider's own `role` and
    // `sid` ignored whatever their type.
    let mut odd = good.clone();
    odd["role"] = json!(["admin", "presenter"]);
    odd["sid"] = json!(42);
    for (pair, alg, claims) in [(&rsa, "RS256", &good), (&ed, "EdDSA", &odd)] {
        let token = scratch.sign(pair, json!({"alg": alg}), claims);
        assert_eq!(open(&app, &token).await.0, 200, "{alg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_file_picks_the_key_by_kid() {
    // Given a JWKS of three openssl keys, built from openssl's output.
    let scratch = Scratch::new();
    let rsa = scratch.keypair("rsa", Kind::Rsa);
    let ec = scratch.keypair("ec", Kind::P256);
    let ed = scratch.keypair("ed", Kind::Ed25519);
    let jwks = json!({"keys": [
        scratch.jwk(&rsa, "rsa-2026"),
        scratch.jwk(&ec, "ec-2026"),
        scratch.jwk(&ed, "ed-2026"),
    ]});
    let path = scratch.path("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let set = load_jwks_file(s(&path)).unwrap();
    assert_eq!(set.keys.len(), 3);
    let app = TestApp::spawn_with(Backend::Postgres, |config| config.token_jwks = vec![set]).await;

    // When a token names its key by kid, then it is accepted; the stream
    // and publish work end to end.
    for (pair, kid) in [(&rsa, "rsa-2026"), (&ec, "ec-2026"), (&ed, "ed-2026")] {
        let header = json!({"alg": pair.alg(), "kid": kid, "typ": "JWT"});
        let token = scratch.sign(pair, header, &claims("ann", kid, in_an_hour()));
        streams_and_publishes(&app, &token, &format!("idp:{kid}")).await;
    }
    // Without a kid, the keys of the token's algorithm are tried.
    let no_kid = scratch.sign(&ec, json!({"alg": "ES256"}), &claims("ann", "nk", in_an_hour()));
    assert_eq!(open(&app, &no_kid).await.0, 200);

    // A kid of another algorithm's key, an unknown kid, and the right kid
    // on another key's signature are all refused.
    let good = claims("ann", "x", in_an_hour());
    let cases = [
        (&rsa, json!({"alg": "RS256", "kid": "ed-2026"})),
        (&rsa, json!({"alg": "RS256", "kid": "rsa-2019"})),
        (&ed, json!({"alg": "EdDSA", "kid": "rsa-2026"})),
        (&ec, json!({"alg": "EdDSA", "kid": "ed-2026"})),
    ];
    for (pair, header) in cases {
        let token = scratch.sign(pair, header.clone(), &good);
        let (status, error) = open(&app, &token).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (401, Some("unauthorized")),
            "{header}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_pollcast_cannot_use_stops_the_start_naming_it() {
    let scratch = Scratch::new();
    let rsa = scratch.keypair("rsa", Kind::Rsa);
    let missing = scratch.path("missing-jwks.json");
    for (flag, path, why) in [
        ("--token-public-key", &rsa.private, "pubout"),
        ("--token-jwks", &missing, "cannot read"),
        ("--token-jwks", &rsa.public, "not a JWKS"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_pollcast"))
            .args(["--listen", "127.0.0.1:0", flag, s(path)])
            .env_remove("DATABASE_URL")
            .env_remove("POLLCAST_TOKEN_PUBLIC_KEY")
            .env_remove("POLLCAST_TOKEN_JWKS")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} {path:?} started");
        assert!(
            stderr.contains(flag) && stderr.contains(s(path)) && stderr.contains(why),
            "{stderr}"
        );
    }
}

/// Given a server that expects the audience `pollcast` and the issuer
/// `https://idp.example.org/`, when the same provider key signs tokens for
/// another application or from another issuer, then those are refused
/// with 401 and a token for pollcast is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_audience_and_issuer_refuse_other_applications_tokens() {
    let scratch = Scratch::new();
    let pair = scratch.keypair("rsa", Kind::Rsa);
    let key = load_pem_file(s(&pair.public)).unwrap();
    let app = TestApp::spawn_with(Backend::Memory, |config| {
        config.token_public_keys = vec![key];
        config.token_audience = vec!["pollcast".into()];
        config.token_issuer = vec!["https://idp.example.org/".into()];
    })
    .await;
    let header = json!({"alg": "RS256"});
    let ours = scratch.sign(&pair, header.clone(), &claims("ann", "ours", in_an_hour()));
    assert_eq!(open(&app, &ours).await.0, 200);

    let mut other_app = claims("ann", "other-app", in_an_hour());
    other_app["aud"] = json!("billing-api");
    let mut no_audience = claims("ann", "no-aud", in_an_hour());
    no_audience.as_object_mut().unwrap().remove("aud");
    let mut other_issuer = claims("ann", "other-iss", in_an_hour());
    other_issuer["iss"] = json!("https://evil.example.org/");
    for (what, claims) in [
        ("another audience", other_app),
        ("no audience", no_audience),
        ("another issuer", other_issuer),
    ] {
        let token = scratch.sign(&pair, header.clone(), &claims);
        assert_eq!(open(&app, &token).await.0, 401, "{what}");
    }
}
