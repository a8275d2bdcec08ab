//! OAuth: `/v1/oauth/token`, `/oauth/authorize`, `/api/oauth/profile`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::ids::random_alnum;
use crate::messages::credential_of;
use crate::respond::{api_error, drop_connection, json_response, oauth_error, set_header};
use crate::state::{AccessCheck, AuthCode, Family, Shared, TokenCallGuard};
use crate::types::{TokenFault, TokenPair};

const DEFAULT_SCOPE: &str = "user:inference user:profile";

/// Parse a token request body: JSON, or (leniently) `application/x-www-form-urlencoded`.
fn parse_token_body(body: &Bytes) -> Option<HashMap<String, String>> {
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
        return Some(
            m.into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Null => None,
                    other => Some((k, other.to_string())),
                })
                .collect(),
        );
    }
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains('=') || text.trim_start().starts_with('{') {
        return None;
    }
    Some(
        text.split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect(),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (_, Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn token_json(pair: &TokenPair, fam: &Family) -> Value {
    json!({
        "token_type": "Bearer",
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires_in": pair.expires_in,
        "scope": fam.scope,
        "organization": {"uuid": fam.org_uuid, "name": fam.org_name},
        "account": {"uuid": fam.account_uuid, "email_address": fam.email},
    })
}

/// Perform a grant; `Ok` is the token response, `Err` the error response and its outcome.
fn grant(sh: &Shared, req: &HashMap<String, String>) -> Result<Value, (Response, &'static str)> {
    let ttl = sh.cfg.access_token_ttl;
    let invalid_grant = |desc: &str| (oauth_error(400, "invalid_grant", desc), "invalid_grant");
    let mut st = sh.lock();
    let family = match req.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let Some(rt) = req.get("refresh_token") else {
                return Err((
                    oauth_error(400, "invalid_request", "Missing refresh_token"),
                    "invalid_request",
                ));
            };
            st.live_refresh_family(rt)
                .ok_or_else(|| invalid_grant("Refresh token not found or invalid"))?
        }
        Some("authorization_code") => {
            let code = req.get("code").map(String::as_str).unwrap_or_default();
            // The code may arrive as pasted `CODE#STATE`.
            let code = code.split('#').next().unwrap_or_default();
            let issued = st
                .codes
                .remove(code)
                .ok_or_else(|| invalid_grant("Invalid authorization code"))?;
            let verifier = req
                .get("code_verifier")
                .map(String::as_str)
                .unwrap_or_default();
            if pkce_challenge(verifier) != issued.challenge {
                return Err(invalid_grant("Invalid code verifier"));
            }
            if req.get("redirect_uri") != Some(&issued.redirect_uri) {
                return Err(invalid_grant("Redirect URI mismatch"));
            }
            st.new_family(&issued.scope)
        }
        _ => {
            return Err((
                oauth_error(400, "unsupported_grant_type", "Unsupported grant_type"),
                "unsupported_grant_type",
            ))
        }
    };
    let pair = st.issue_pair(family, ttl);
    let fam = st
        .families
        .get(&family)
        .ok_or_else(|| invalid_grant("Unknown token family"))?;
    Ok(token_json(&pair, fam))
}

pub(crate) async fn token(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = parse_token_body(&body);
    let (grant_type, refresh_token) = parsed
        .as_ref()
        .map(|m| {
            (
                m.get("grant_type").cloned().unwrap_or_default(),
                m.get("refresh_token").cloned(),
            )
        })
        .unwrap_or_default();
    let call = TokenCallGuard::begin(&sh, grant_type, refresh_token);
    let Some(req) = parsed else {
        return call.finish(
            oauth_error(400, "invalid_request", "Request body must be JSON"),
            "invalid_request",
        );
    };
    let fault = sh.take_token_fault();
    let mut delay = sh.cfg.token_latency;
    if let Some(TokenFault::Slow(d)) = &fault {
        delay += *d;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(TokenFault::RateLimited {
            retry_after,
            retry_after_ms,
        }) => {
            // The shape platform.claude.com answers (seen in clients' logs): an Anthropic-style error object.
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": {"type": "rate_limit_error", "message": "Rate limited. Please try again later."}}),
            );
            if let Some(ra) = retry_after {
                set_header(&mut r, "retry-after", &ra);
            }
            if let Some(ms) = retry_after_ms {
                set_header(&mut r, "retry-after-ms", &ms.to_string());
            }
            call.finish(r, "rate_limited")
        }
        Some(TokenFault::ServerError) => call.finish(
            oauth_error(500, "server_error", "Internal server error"),
            "server_error",
        ),
        Some(TokenFault::DropConnection) => call.finish(drop_connection(), "dropped"),
        Some(TokenFault::InvalidGrant) => call.finish(
            oauth_error(400, "invalid_grant", "Refresh token not found or invalid"),
            "invalid_grant",
        ),
        Some(TokenFault::RotateThenDrop) => {
            let outcome = match grant(&sh, &req) {
                Ok(_) => "rotated_then_dropped",
                Err(_) => "dropped",
            };
            call.finish(drop_connection(), outcome)
        }
        Some(TokenFault::Hostile {
            expires_in,
            headers,
        }) => match grant(&sh, &req) {
            Ok(mut v) => {
                v["expires_in"] = expires_in;
                let mut r = json_response(StatusCode::OK, &v);
                for (name, value) in &headers {
                    set_header(&mut r, name, value);
                }
                call.finish(r, "ok")
            }
            Err((r, outcome)) => call.finish(r, outcome),
        },
        Some(TokenFault::RotateThenGarbage) => match grant(&sh, &req) {
            Ok(_) => {
                let mut r =
                    Response::new(axum::body::Body::from("<html>upstream proxy error</html>"));
                set_header(&mut r, "content-type", "text/html");
                call.finish(r, "rotated_then_garbage")
            }
            Err((r, outcome)) => call.finish(r, outcome),
        },
        Some(TokenFault::Slow(_)) | None => match grant(&sh, &req) {
            Ok(v) => call.finish(json_response(StatusCode::OK, &v), "ok"),
            Err((r, outcome)) => call.finish(r, outcome),
        },
    }
}

pub(crate) async fn authorize(
    State(sh): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(redirect_uri), Some(challenge)) = (get("redirect_uri"), get("code_challenge")) else {
        return oauth_error(
            400,
            "invalid_request",
            "redirect_uri and code_challenge are required",
        );
    };
    if get("response_type") != Some("code") {
        return oauth_error(
            400,
            "unsupported_response_type",
            "response_type must be code",
        );
    }
    if get("code_challenge_method") != Some("S256") {
        return oauth_error(400, "invalid_request", "code_challenge_method must be S256");
    }
    let code = random_alnum(40);
    sh.lock().codes.insert(
        code.clone(),
        AuthCode {
            challenge: challenge.to_string(),
            redirect_uri: redirect_uri.to_string(),
            scope: get("scope").unwrap_or(DEFAULT_SCOPE).to_string(),
        },
    );
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let mut location = format!("{redirect_uri}{sep}code={}", percent_encode(&code));
    if let Some(state) = get("state") {
        location.push_str(&format!("&state={}", percent_encode(state)));
    }
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
            r
        }
        Err(_) => oauth_error(400, "invalid_request", "invalid redirect_uri"),
    }
}

pub(crate) async fn profile(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some((true, token)) = credential_of(&headers) else {
        return api_error(401, "authentication_error", "OAuth bearer token required");
    };
    let st = sh.lock();
    let fam = match st.check_access(&token) {
        AccessCheck::Valid(f) => st.families.get(&f),
        _ => None,
    };
    match fam {
        Some(f) => json_response(
            StatusCode::OK,
            &json!({
                "account": {"uuid": f.account_uuid, "email": f.email, "email_address": f.email},
                "organization": {"uuid": f.org_uuid, "name": f.org_name},
            }),
        ),
        None => api_error(401, "authentication_error", "Invalid bearer token"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let s = "http://localhost:54545/callback?a=b c&d=é%";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_decode("a+b%2Fc%zz"), "a b/c%zz");
    }

    #[test]
    fn form_bodies_are_accepted() {
        let m = parse_token_body(&Bytes::from_static(
            b"grant_type=refresh_token&refresh_token=sk-ant-ort01-x%2By",
        ))
        .unwrap();
        assert_eq!(m["refresh_token"], "sk-ant-ort01-x+y");
        assert!(parse_token_body(&Bytes::from_static(b"{broken")).is_none());
    }

    #[test]
    fn pkce_matches_rfc7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
