//! The OAuth token endpoint client: refresh-token and authorization-code grants, and PKCE.
//!
//! Errors keep the endpoint's status and say whether the request may have been processed ([`TokenError::outcome_unknown`]):
//! with single-use refresh tokens a lost answer means the token may already be rotated.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use sha2::Digest;

use crate::account::Identity;
use crate::clock::SharedClock;
use crate::config::OAuthConfig;

/// A token-endpoint answer. `Debug` never prints a token.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds, always within [0, `clock::MAX_WAIT`] (see [`bounded_expires_in`]).
    #[serde(default, deserialize_with = "bounded_expires_in")]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub organization: Option<Organization>,
    #[serde(default)]
    pub account: Option<AccountInfo>,
}

impl TokenResponse {
    /// When the access token expires, counted from `now`; never overflows.
    pub fn expires_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.expires_in
            .map(|s| crate::clock::wall_in(now, Duration::from_secs(s)))
    }
}

/// `expires_in` parsed into a bounded domain: any JSON number (integer, negative, float, huge) becomes whole seconds
/// in [0, `clock::MAX_WAIT`], a numeric string likewise; anything else is "not said" (`None`). A token response is
/// only sent after the endpoint has rotated, so an odd `expires_in` must never make the answer unusable.
fn bounded_expires_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    let secs = match &v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Ok(secs.map(|s| crate::clock::duration_secs_f64(s).as_secs()))
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenResponse {
    /// The identity the token endpoint reported with these tokens (often only part of it).
    pub fn identity(&self) -> Identity {
        Identity {
            email: self.account.as_ref().and_then(|a| a.email_address.clone()),
            account_uuid: self.account.as_ref().and_then(|a| a.uuid.clone()),
            organization_uuid: self.organization.as_ref().and_then(|o| o.uuid.clone()),
            organization_name: self.organization.as_ref().and_then(|o| o.name.clone()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Organization {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccountInfo {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default, alias = "email")]
    pub email_address: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// 429: do not call again before `retry_after` (or a computed backoff when absent).
    #[error("token endpoint answered 429 (rate limited)")]
    RateLimited { retry_after: Option<Duration> },
    /// The grant was refused (`invalid_grant`, 400/401/403/404): retrying the same token cannot help.
    #[error("token endpoint refused the grant ({status} {error}{})", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rejected {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("token endpoint answered {status}")]
    Server { status: u16 },
    /// Nothing reached the endpoint (connect failed): safe to retry.
    #[error("cannot reach the token endpoint: {0}")]
    Connect(String),
    /// The request was sent but no answer arrived: the endpoint may have rotated the token.
    #[error("token endpoint answer lost: {0}")]
    Lost(String),
    #[error("token endpoint did not answer within the call timeout")]
    Timeout,
    #[error("token endpoint sent an invalid answer: {0}")]
    BadResponse(String),
}

impl TokenError {
    /// The request may have been processed although we saw no answer. A 200 whose body cannot be parsed counts: the
    /// endpoint has rotated the token, we just cannot read the new one.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            TokenError::Lost(_) | TokenError::Timeout | TokenError::BadResponse(_)
        )
    }
    /// The metrics label of this outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            TokenError::RateLimited { .. } => "rate_limited",
            TokenError::Rejected { .. } => "invalid_grant",
            TokenError::Timeout => "timeout",
            TokenError::Server { .. }
            | TokenError::Connect(_)
            | TokenError::Lost(_)
            | TokenError::BadResponse(_) => "transient",
        }
    }
}

pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<TokenResponse, TokenError>> + Send + 'a>>;

/// Where refresh tokens are exchanged. The engine only knows this trait, so tests can script it.
pub trait TokenEndpoint: Send + Sync + std::fmt::Debug {
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> TokenFuture<'a>;
}

/// The HTTP client of a real (or simulated) token endpoint.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    config: OAuthConfig,
    clock: SharedClock,
}

impl OAuthClient {
    pub fn new(http: reqwest::Client, config: OAuthConfig, clock: SharedClock) -> Self {
        OAuthClient {
            http,
            config,
            clock,
        }
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    async fn post(&self, body: serde_json::Value) -> Result<TokenResponse, TokenError> {
        let response = self
            .http
            .post(&self.config.token_url)
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await
            .map_err(classify_send_error)?;
        let status = response.status();
        let retry_after = crate::ratelimit::retry_after(response.headers(), self.clock.now());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TokenError::Lost(crate::error::error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_slice::<TokenResponse>(&bytes)
                .map_err(|e| TokenError::BadResponse(parse_error(&e)));
        }
        let code = status.as_u16();
        if code == 429 {
            return Err(TokenError::RateLimited { retry_after });
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            #[serde(default)]
            error: serde_json::Value,
            #[serde(default)]
            error_description: Option<String>,
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let error = parsed
            .as_ref()
            .map(|b| match &b.error {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o
                    .get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("error")
                    .to_string(),
                _ => String::new(),
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let description = parsed
            .and_then(|b| b.error_description)
            .map(|d| d.chars().take(300).collect());
        match code {
            400..=499 if code != 408 => Err(TokenError::Rejected {
                status: code,
                error,
                description,
            }),
            _ => Err(TokenError::Server { status: code }),
        }
    }

    /// Exchanges an authorization code (login).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        state: &str,
    ) -> Result<TokenResponse, TokenError> {
        self.post(serde_json::json!({
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri(),
            "client_id": self.config.client_id,
            "code_verifier": verifier,
            "state": state,
        }))
        .await
    }

    /// Fetches the account's email and organization with an access token; `None` when the endpoint does not answer.
    /// The signed-in account's identity from the profile endpoint, if it answers.
    pub async fn profile(&self, access_token: &str) -> Option<Identity> {
        let response = self
            .http
            .get(&self.config.profile_url)
            .bearer_auth(access_token)
            .header("anthropic-beta", crate::headers::OAUTH_BETA)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let v: serde_json::Value = response.json().await.ok()?;
        let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
        Some(Identity {
            email: s("/account/email"),
            account_uuid: s("/account/uuid"),
            organization_uuid: s("/organization/uuid"),
            organization_name: s("/organization/name"),
        })
    }
}

impl TokenEndpoint for OAuthClient {
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> TokenFuture<'a> {
        Box::pin(self.post(serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.config.client_id,
        })))
    }
}

/// Where and how a token response failed to parse, without quoting it (it may contain tokens).
fn parse_error(e: &serde_json::Error) -> String {
    format!(
        "unparsable token response ({:?} error at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

fn classify_send_error(e: reqwest::Error) -> TokenError {
    if e.is_connect() {
        TokenError::Connect(crate::error::error_chain(&e))
    } else if e.is_timeout() {
        TokenError::Timeout
    } else {
        TokenError::Lost(crate::error::error_chain(&e))
    }
}

/// A PKCE verifier/challenge pair (S256) and a random `state`.
#[derive(Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
    pub state: String,
}

impl Pkce {
    pub fn generate() -> Pkce {
        use rand::RngCore;
        let mut rng = rand::rng();
        let mut v = [0u8; 64];
        rng.fill_bytes(&mut v);
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let verifier = b64.encode(v);
        let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
            state: b64.encode(s),
        }
    }

    /// The URL the user opens to authorize.
    pub fn authorize_url(&self, config: &OAuthConfig) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&config.authorize_url).map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("code", "true")
            .append_pair("client_id", &config.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &config.redirect_uri())
            .append_pair("scope", &config.scopes)
            .append_pair("code_challenge", &self.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &self.state);
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_s256_of_verifier() {
        let p = Pkce::generate();
        assert!(p.verifier.len() >= 43 && p.verifier.len() <= 128);
        let expect = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(p.verifier.as_bytes()));
        assert_eq!(p.challenge, expect);
        let url = p.authorize_url(&OAuthConfig::default()).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "http://localhost:54545/callback");
        assert_eq!(q["state"], p.state);
    }

    #[test]
    fn token_response_debug_hides_tokens() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"sk-ant-oat01-SECRET","refresh_token":"sk-ant-ort01-SECRET","expires_in":5}"#)
                .unwrap();
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}
