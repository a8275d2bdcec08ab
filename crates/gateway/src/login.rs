//! `claude-gateway login`: OAuth authorization code with PKCE (S256).
//!
//! Prints the authorize URL, then takes whichever comes first: the browser's redirect to the local callback listener,
//! or a pasted `CODE#STATE` (or the full callback URL) on standard input. `state` must match.

use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::Query;
use axum::response::Html;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::account::{Credential, Identity};
use crate::oauth::{OAuthClient, Pkce};
use crate::store::{upsert_one, OauthAccount, Saved, Store};

pub mod pending;

/// Parses what a user pastes: `CODE#STATE`, or a callback URL with `code` and `state` query parameters.
pub fn parse_pasted(input: &str) -> Option<(String, String)> {
    let input = input.trim();
    if let Ok(url) = reqwest::Url::parse(input) {
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        return Some((q.get("code")?.clone(), q.get("state")?.clone()));
    }
    let (code, state) = input.split_once('#')?;
    (!code.is_empty() && !state.is_empty()).then(|| (code.to_string(), state.to_string()))
}

/// Runs the login flow and stores the account. `out` receives the user-facing lines.
pub async fn login(
    client: &OAuthClient,
    store: &dyn Store,
    name: Option<&str>,
    mut out: impl FnMut(&str),
) -> anyhow::Result<(crate::account::Account, Saved)> {
    let pkce = Pkce::generate();
    let url = pkce
        .authorize_url(client.config())
        .map_err(anyhow::Error::msg)
        .context("oauth.authorize_url")?;
    let (code, state) =
        wait_for_code(client.config().callback_port, url.as_str(), &mut out).await?;
    if state != pkce.state {
        bail!("the returned state does not match this login attempt; start again");
    }
    let tokens = client
        .exchange_code(&code, &pkce.verifier, &state)
        .await
        .context("exchanging the authorization code")?;
    let account = signed_in(client, tokens).await;
    Ok(upsert_one(store, &account, name).await?)
}

/// Prints the authorize URL and waits (at most 15 minutes) for whichever comes first: the browser's redirect to the
/// local callback listener, or a pasted `CODE#STATE` / callback URL on standard input.
async fn wait_for_code(
    port: u16,
    url: &str,
    out: &mut impl FnMut(&str),
) -> anyhow::Result<(String, String)> {
    let (tx, mut rx) = mpsc::channel::<(String, String)>(4);
    let server = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => Some(callback_listener(listener, tx.clone())),
        Err(e) => {
            out(&format!("(could not listen on 127.0.0.1:{port} for the browser callback: {e}; paste the code instead)"));
            None
        }
    };
    out("Open this URL in a browser and authorize:");
    out(url);
    out("Waiting for the browser callback, or paste the code shown (CODE#STATE) and press Enter:");
    let stdin = pasted_code(tx);
    let received = tokio::time::timeout(Duration::from_secs(15 * 60), rx.recv()).await;
    stdin.abort();
    if let Some(s) = server {
        s.abort();
    }
    match received {
        Ok(Some(pair)) => Ok(pair),
        Ok(None) => bail!("no authorization code received"),
        Err(_) => bail!("timed out waiting for the authorization code"),
    }
}

/// Serves `/callback` and sends the `code` and `state` it receives. The caller aborts it when login ends.
fn callback_listener(
    listener: tokio::net::TcpListener,
    tx: mpsc::Sender<(String, String)>,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |Query(q): Query<std::collections::HashMap<String, String>>| {
            let tx = tx.clone();
            async move {
                match (q.get("code"), q.get("state")) {
                    (Some(c), Some(s)) => {
                        let _ = tx.send((c.clone(), s.clone())).await;
                        Html("<h1>Signed in</h1><p>You can close this window and return to the terminal.</p>")
                    }
                    _ => Html("<h1>Missing code</h1><p>The authorization server did not send a code.</p>"),
                }
            }
        }),
    );
    #[allow(clippy::disallowed_methods)] // aborted when login ends
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Reads standard input until a line parses as a pasted code. The caller aborts it when login ends.
fn pasted_code(tx: mpsc::Sender<(String, String)>) -> tokio::task::JoinHandle<()> {
    #[allow(clippy::disallowed_methods)] // aborted when login ends
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(pair) = parse_pasted(&line) {
                let _ = tx.send(pair).await;
                return;
            }
        }
    })
}

/// The account a code exchange signed in: its tokens and identity (from the token answer, else the profile).
pub(crate) async fn signed_in(
    client: &OAuthClient,
    tokens: crate::oauth::TokenResponse,
) -> OauthAccount {
    let mut identity = tokens.identity();
    if identity.email.is_none() {
        if let Some(profile) = client.profile(&tokens.access_token).await {
            identity = Identity {
                email: profile.email.clone(),
                ..identity
            }
            .or(profile);
        }
    }
    // Bounded (`clock::MAX_WAIT`): an absurd `expires_in` must not overflow the date arithmetic.
    let expires_at = tokens.expires_at(crate::clock::system_now());
    OauthAccount {
        name: identity
            .email
            .clone()
            .unwrap_or_else(|| "claude-login".into()),
        credential: Credential {
            secret: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            expires_at,
        },
        identity,
        disabled: false,
        priority: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_forms() {
        assert_eq!(
            parse_pasted(" abc#xyz \n"),
            Some(("abc".into(), "xyz".into()))
        );
        assert_eq!(
            parse_pasted("http://localhost:54545/callback?code=c1&state=s1"),
            Some(("c1".into(), "s1".into()))
        );
        assert_eq!(parse_pasted("abc"), None);
        assert_eq!(parse_pasted("#x"), None);
    }
}
