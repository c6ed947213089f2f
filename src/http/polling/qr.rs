//! `GET /v1/sessions/{idOrCode}/qr.svg`: the session's join link as a QR
//! code, for the presenter's page and the projector. No token: the code on
//! the screen is the invitation anyway.
//!
//! The link is the one `--public-url` gives; without it, the address the
//! caller reached this server by (its `Host`), which is right when the
//! presenter opened the page at the address the room can reach and wrong on
//! `localhost` — the start-up line says so.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use warp::reply::Response;

use super::super::error::ApiError;
use super::super::request::RequestContext;
use super::super::state::AppState;
use super::parse::parse_session_key;
use super::render;
use crate::polling::queries::GetSnapshot;
use crate::polling::Stamp;

/// The smallest side of the image, in SVG user units (it scales freely).
const MIN_SIDE: u32 = 320;

/// `GET /v1/sessions/{idOrCode}/qr.svg`
pub async fn join_qr(raw_key: String, state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        let key = parse_session_key(&raw_key)?;
        let stamp = Stamp::new(ctx.trace_id.clone());
        let query = GetSnapshot {
            key,
            viewer: None,
            stamp,
        };
        let slug = match state.polling.query(query).await? {
            Ok(snapshot) => snapshot.session.slug,
            Err(refusal) => return Err(render::refusal(&refusal)),
        };
        let link = match &state.public_url {
            Some(public) => public.join_url(&slug),
            None => own_join_url(ctx.header("host"), &slug)?,
        };
        let image =
            qr_svg(&link).ok_or_else(|| ApiError::bad_request("the join link is too long for a QR code"))?;
        Ok(svg_response(image))
    }
    .await;
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

/// The join link on the address the caller used, when no public URL is
/// set: the `Host` must be a plain host and port.
fn own_join_url(host: Option<&str>, slug: &str) -> Result<String, ApiError> {
    let host = host.ok_or_else(|| ApiError::bad_request("no Host header to build the join link from"))?;
    let parsed = url::Url::parse(&format!("http://{host}/"))
        .ok()
        .filter(|u| {
            u.path() == "/" && u.username().is_empty() && u.query().is_none() && u.fragment().is_none()
        })
        .ok_or_else(|| ApiError::bad_request("the Host header is not a host name and port"))?;
    let mut origin = parsed.origin().ascii_serialization();
    if origin == "null" {
        return Err(ApiError::bad_request(
            "the Host header is not a host name and port",
        ));
    }
    origin.push_str("/join?code=");
    origin.push_str(slug);
    Ok(origin)
}

/// `text` as a QR code in SVG, dark on white with its quiet zone;
/// `None` if it does not fit in a QR code. Level M survives a smudged
/// projector screen without making the code dense.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(MIN_SIDE, MIN_SIDE)
            .quiet_zone(true)
            .build(),
    )
}

fn svg_response(image: String) -> Response {
    let mut response = Response::new(image.into());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The image is ours and has no script; say so to anything rendering it.
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_link_becomes_an_svg_qr_code() {
        let image = qr_svg("https://poll.example.org/join?code=k7m2qx").unwrap();
        assert!(image.starts_with("<?xml"), "{}", &image[..40]);
        assert!(image.contains("<svg") && image.contains("<path"));
        assert!(!image.contains("<script"));
    }

    #[test]
    fn text_beyond_a_qr_codes_capacity_is_refused() {
        assert!(qr_svg(&"x".repeat(5000)).is_none());
    }

    #[test]
    fn the_link_is_built_only_from_a_plain_host() {
        assert_eq!(
            own_join_url(Some("192.168.1.20:8080"), "abc234").unwrap(),
            "http://192.168.1.20:8080/join?code=abc234"
        );
        assert_eq!(
            own_join_url(Some("Poll.Example.org"), "abc234").unwrap(),
            "http://poll.example.org/join?code=abc234"
        );
        for hostile in ["evil.com/x?", "a@b.com", "x y", "", "evil.com#frag", "[::1"] {
            assert!(own_join_url(Some(hostile), "abc234").is_err(), "{hostile:?}");
        }
        assert!(own_join_url(None, "abc234").is_err());
    }
}
