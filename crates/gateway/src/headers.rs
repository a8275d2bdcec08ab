//! Header policy between client and upstream.
//!
//! Requests: the client's headers pass through (they are the client's own, not disguised) except hop-by-hop headers,
//! the client's gateway credential, headers the HTTP client sets itself, and headers that describe the browser or the
//! proxies in between rather than the API call (`Origin`, `Referer`, `Cookie`, `Sec-*`, `Forwarded`, `X-Forwarded-*`,
//! `X-Real-IP`, `True-Client-IP`, `CF-*`, `Via`): Anthropic answers any request carrying `Origin` with a 401 whatever
//! the credential, and the others only tell upstream about the client's network. The client's own API headers
//! (`anthropic-*`, `user-agent`, `x-app`, session headers, `x-stainless-*`) pass untouched; the chosen account's
//! credential is added.
//! Responses: only headers useful to a client pass back (content type, request id, rate-limit and retry headers).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::account::{Account, AccountKind};

pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Anthropic requires this beta flag on requests authenticated with an OAuth access token.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Request headers never forwarded upstream.
const DROP_REQUEST: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "accept-encoding",
    // Browser-only and proxy-identifying headers.
    "origin",
    "referer",
    "cookie",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "via",
];

/// Prefixes of request headers never forwarded upstream: `sec-*` is reserved to browsers (the Fetch standard forbids
/// scripts to set it), `x-forwarded-*` and `cf-*` are added by proxies and CDNs.
const DROP_REQUEST_PREFIXES: &[&str] = &["sec-", "x-forwarded-", "cf-"];

fn dropped(name: &str) -> bool {
    DROP_REQUEST.contains(&name) || DROP_REQUEST_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Builds the upstream request headers for `account` from the client's, in one pass over them.
pub fn upstream_request(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + 2);
    // Names listed in `Connection` are hop-by-hop too.
    let connection_listed: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    // The client's `anthropic-beta` values, from every such header, in order, without duplicates.
    let mut betas: Vec<&str> = Vec::new();
    let mut has_version = false;
    for (name, value) in client {
        let n = name.as_str();
        if n == "anthropic-beta" {
            if let Ok(v) = value.to_str() {
                add_betas(&mut betas, v);
            }
            continue;
        }
        if dropped(n) || connection_listed.iter().any(|c| c == n) {
            continue;
        }
        has_version |= n == "anthropic-version";
        out.append(
            static_name(n).unwrap_or_else(|| name.clone()),
            value.clone(),
        );
    }
    if !has_version {
        out.insert(
            ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
    match account.kind {
        AccountKind::ApiKey => {
            if let Ok(v) = HeaderValue::from_str(&account.credential.secret) {
                out.insert(X_API_KEY, v);
            }
        }
        AccountKind::Oauth => {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", account.credential.secret)) {
                out.insert(header::AUTHORIZATION, v);
            }
            if !betas.contains(&OAUTH_BETA) {
                betas.push(OAUTH_BETA);
            }
        }
    }
    if !betas.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&betas.join(",")) {
            out.insert(ANTHROPIC_BETA, v);
        }
    }
    out
}

/// Adds the comma-separated values of one `anthropic-beta` header not already in `betas`.
fn add_betas<'a>(betas: &mut Vec<&'a str>, value: &'a str) {
    for b in value.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        if !betas.contains(&b) {
            betas.push(b);
        }
    }
}

/// The same name as static text, for the non-standard names API clients send on every request: a copy of the
/// client's (read from its request) would be shared, which allocates, and its count touched on every use.
fn static_name(name: &str) -> Option<HeaderName> {
    const NAMES: [&str; 12] = [
        "anthropic-version",
        "anthropic-dangerous-direct-browser-access",
        "x-app",
        "x-stainless-arch",
        "x-stainless-lang",
        "x-stainless-os",
        "x-stainless-package-version",
        "x-stainless-retry-count",
        "x-stainless-runtime",
        "x-stainless-runtime-version",
        "x-stainless-timeout",
        "x-stainless-helper-method",
    ];
    NAMES
        .iter()
        .copied()
        .find(|n| *n == name)
        .map(HeaderName::from_static)
}

/// Whether an upstream response header is passed back to the client.
pub fn pass_back(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type" | "request-id" | "retry-after" | "retry-after-ms" | "x-should-retry"
    ) || n.starts_with("anthropic-ratelimit-")
}

/// The headers passed back to the client: upstream's, less those [`pass_back`] refuses, removed in place. Nothing
/// kept is copied or hashed again (a copy of the map would copy every name hyper read, each a fresh allocation when it
/// is not a standard one); usually fewer are refused than kept. The values of one name keep their order; the order of
/// different names may not be upstream's (HTTP gives it no meaning).
pub fn client_response(mut headers: HeaderMap) -> HeaderMap {
    let mut refused = Refused::default();
    let mut all_listed = true;
    for name in headers.keys().filter(|n| !pass_back(n)) {
        all_listed &= refused.push(name.as_str());
    }
    // From the last: removing the last entry moves no other.
    for name in refused.names().rev() {
        headers.remove(name);
    }
    if !all_listed {
        // More refused names than the list holds: the rest one at a time.
        while let Some(name) = headers.keys().find(|n| !pass_back(n)).cloned() {
            headers.remove(&name);
        }
    }
    headers
}

/// Names of refused headers, copied onto the stack (a map cannot lose entries while its names are borrowed, and a
/// clone of a non-standard name allocates).
struct Refused {
    bytes: [u8; 512],
    ends: [usize; 24],
    len: usize,
}

impl Default for Refused {
    fn default() -> Self {
        Refused {
            bytes: [0; 512],
            ends: [0; 24],
            len: 0,
        }
    }
}

impl Refused {
    /// Adds `name`; false when there is no room for it.
    fn push(&mut self, name: &str) -> bool {
        let start = self.end(self.len);
        let end = start + name.len();
        if self.len == self.ends.len() || end > self.bytes.len() {
            return false;
        }
        self.bytes[start..end].copy_from_slice(name.as_bytes());
        self.ends[self.len] = end;
        self.len += 1;
        true
    }

    fn end(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    fn names(&self) -> impl DoubleEndedIterator<Item = &str> {
        (0..self.len)
            .filter_map(|i| std::str::from_utf8(&self.bytes[self.end(i)..self.end(i + 1)]).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Credential;

    /// The request headers as they were built before they took one pass (kept to compare against).
    mod before {
        use super::super::*;

        /// Builds the upstream request headers for `account` from the client's.
        pub fn upstream_request(client: &HeaderMap, account: &Account) -> HeaderMap {
            let mut out = HeaderMap::with_capacity(client.len() + 2);
            // Names listed in `Connection` are hop-by-hop too.
            let connection_listed: Vec<String> = client
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
                .collect();
            for (name, value) in client {
                let n = name.as_str();
                if dropped(n) || connection_listed.iter().any(|c| c == n) || n == "anthropic-beta" {
                    continue;
                }
                out.append(name.clone(), value.clone());
            }
            if !out.contains_key(&ANTHROPIC_VERSION) {
                out.insert(
                    ANTHROPIC_VERSION,
                    HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
                );
            }
            let mut betas = client_betas(client);
            match account.kind {
                AccountKind::ApiKey => {
                    if let Ok(v) = HeaderValue::from_str(&account.credential.secret) {
                        out.insert(X_API_KEY, v);
                    }
                }
                AccountKind::Oauth => {
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("Bearer {}", account.credential.secret))
                    {
                        out.insert(header::AUTHORIZATION, v);
                    }
                    if !betas.iter().any(|b| b == OAUTH_BETA) {
                        betas.push(OAUTH_BETA.to_string());
                    }
                }
            }
            if !betas.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&betas.join(",")) {
                    out.insert(ANTHROPIC_BETA, v);
                }
            }
            out
        }

        /// The client's `anthropic-beta` values, from every such header, in order, without duplicates.
        fn client_betas(client: &HeaderMap) -> Vec<String> {
            let mut betas: Vec<String> = Vec::new();
            for v in client
                .get_all(&ANTHROPIC_BETA)
                .iter()
                .filter_map(|v| v.to_str().ok())
            {
                for b in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                    if !betas.iter().any(|x| x == b) {
                        betas.push(b.to_string());
                    }
                }
            }
            betas
        }
    }

    fn account(kind: AccountKind) -> Account {
        Account {
            id: 1,
            name: "a".into(),
            kind,
            credential: Credential {
                secret: "sk-upstream".into(),
                refresh_token: None,
                expires_at: None,
            },
            disabled: false,
            needs_reauth: None,
            banned: None,
            last_error: None,
            identity: Default::default(),
            priority: 0,
            weight: 1,
            max_concurrency: None,
            refresh_blocked_until: None,
            refresh_block_reason: None,
            tags: Vec::new(),
            version: 1,
            created_at: crate::clock::system_now(),
            updated_at: crate::clock::system_now(),
        }
    }

    fn client() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-gw-client".parse().unwrap());
        h.insert("authorization", "Bearer sk-gw-client".parse().unwrap());
        h.insert("connection", "keep-alive, x-custom-hop".parse().unwrap());
        h.insert("x-custom-hop", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("user-agent", "claude-cli/2.0".parse().unwrap());
        h.append("anthropic-beta", "a, b".parse().unwrap());
        h.append("anthropic-beta", "b,oauth-2025-04-20".parse().unwrap());
        h
    }

    #[test]
    fn api_key_account() {
        let out = upstream_request(&client(), &account(AccountKind::ApiKey));
        assert_eq!(out["x-api-key"], "sk-upstream");
        assert!(out.get("authorization").is_none());
        assert!(
            out.get("connection").is_none()
                && out.get("x-custom-hop").is_none()
                && out.get("transfer-encoding").is_none()
        );
        assert_eq!(out["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
        assert_eq!(out["user-agent"], "claude-cli/2.0");
        assert_eq!(out["anthropic-beta"], "a,b,oauth-2025-04-20");
    }

    #[test]
    fn oauth_account_merges_beta_without_duplicates() {
        let mut c = client();
        c.remove("anthropic-beta");
        c.insert("anthropic-beta", "x".parse().unwrap());
        c.insert("anthropic-version", "2099-01-01".parse().unwrap());
        let out = upstream_request(&c, &account(AccountKind::Oauth));
        assert_eq!(out["authorization"], "Bearer sk-upstream");
        assert!(out.get("x-api-key").is_none());
        assert_eq!(out["anthropic-beta"], "x,oauth-2025-04-20");
        assert_eq!(out["anthropic-version"], "2099-01-01");
        let out = upstream_request(&client(), &account(AccountKind::Oauth));
        assert_eq!(out["anthropic-beta"], "a,b,oauth-2025-04-20");
    }

    #[test]
    fn browser_and_proxy_headers_stay_here_and_api_headers_pass() {
        let mut c = HeaderMap::new();
        for (n, v) in [
            ("origin", "http://chat.example"),
            ("referer", "http://chat.example/c/1"),
            ("cookie", "session=1"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-site", "cross-site"),
            ("sec-ch-ua", "\"Chromium\";v=\"130\""),
            ("sec-ch-ua-platform", "\"Linux\""),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "gw.example"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "10.0.0.1"),
            ("true-client-ip", "10.0.0.1"),
            ("cf-connecting-ip", "10.0.0.1"),
            ("cf-ray", "abc"),
            ("via", "1.1 proxy"),
        ] {
            c.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let kept = [
            ("anthropic-version", "2023-06-01"),
            ("anthropic-dangerous-direct-browser-access", "true"),
            ("user-agent", "claude-cli/2.0"),
            ("x-app", "cli"),
            ("x-claude-code-session-id", "s-1"),
            ("x-stainless-lang", "js"),
            ("x-stainless-retry-count", "0"),
            ("content-type", "application/json"),
        ];
        for (n, v) in kept {
            c.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = upstream_request(&c, &account(AccountKind::ApiKey));
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        for (n, v) in kept {
            assert_eq!(out[n], v, "{n} passes untouched");
        }
        assert_eq!(
            names.len(),
            kept.len() + 1,
            "only the client's API headers and the credential: {names:?}"
        );
    }

    #[test]
    fn response_headers_allowlist() {
        let mut h = HeaderMap::new();
        h.insert("request-id", "req_1".parse().unwrap());
        h.insert(
            "anthropic-ratelimit-unified-5h-utilization",
            "0.5".parse().unwrap(),
        );
        h.insert("set-cookie", "x".parse().unwrap());
        h.insert("anthropic-organization-id", "org".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        let out = client_response(h.clone());
        assert_eq!(out.len(), 2);
    }

    /// What passes back, name by name with every value in order, is what filtering upstream's headers one by one
    /// gives, for an answer shaped like Anthropic's (refused names first, last, between, and repeated).
    #[test]
    fn response_headers_are_upstreams_passed_back_values_in_order() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("date", "Tue, 01 Dec 2026 16:32:30 GMT"),
            ("content-type", "application/json"),
            ("content-length", "1448"),
            ("connection", "keep-alive"),
            ("anthropic-ratelimit-requests-limit", "4000"),
            ("set-cookie", "a=1"),
            ("anthropic-ratelimit-requests-remaining", "3999"),
            ("request-id", "req_1"),
            ("set-cookie", "b=2"),
            ("x-should-retry", "false"),
            ("anthropic-ratelimit-unified-5h-status", "allowed"),
            ("anthropic-ratelimit-unified-5h-status", "again"),
            ("anthropic-organization-id", "org"),
            ("retry-after", "3"),
            ("via", "1.1 google"),
            ("cf-ray", "abc-LHR"),
            ("retry-after-ms", "2500"),
            ("server", "cloudflare"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = client_response(h.clone());
        let mut expected = HeaderMap::new();
        for (n, v) in &h {
            if pass_back(n) {
                expected.append(n.clone(), v.clone());
            }
        }
        // Equal maps: the same names, each with the same values in the same order.
        assert_eq!(out, expected);
        assert_eq!(out.len(), 9);
    }

    /// Upstream's headers filtered one by one, the reference `client_response` must equal.
    fn filtered(h: &HeaderMap) -> HeaderMap {
        let mut expected = HeaderMap::new();
        for (n, v) in h {
            if pass_back(n) {
                expected.append(n.clone(), v.clone());
            }
        }
        expected
    }

    /// More refused names than the stack list holds (by count, then by length) are all removed too.
    #[test]
    fn many_refused_names_are_all_removed() {
        for (count, len) in [(60, 8), (5, 200)] {
            let mut h = HeaderMap::new();
            h.append("request-id", HeaderValue::from_static("req_1"));
            for i in 0..count {
                let name = format!("x-refused-{i}-{}", "n".repeat(len));
                h.append(HeaderName::try_from(name).unwrap(), HeaderValue::from(i));
                h.append("anthropic-ratelimit-requests-limit", HeaderValue::from(i));
            }
            let out = client_response(h.clone());
            assert_eq!(out, filtered(&h), "{count} names of {len}");
            assert_eq!(out.len(), count + 1);
        }
    }

    proptest::proptest! {
        /// Whatever upstream sends (names kept and refused, standard and not, repeated, in any order), what passes
        /// back is upstream's headers filtered one by one.
        #[test]
        fn what_passes_back_is_upstreams_filtered(
            entries in proptest::collection::vec((0usize..14, 0u16..4), 0..60),
        ) {
            const NAMES: [&str; 14] = [
                "date", "content-type", "content-length", "server", "set-cookie", "request-id", "retry-after",
                "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-unified-5h-status",
                "anthropic-organization-id", "cf-ray", "x-envoy-upstream-service-time", "x-should-retry",
                "retry-after-ms",
            ];
            let mut h = HeaderMap::new();
            for (name, value) in entries {
                h.append(HeaderName::from_static(NAMES[name]), HeaderValue::from(value));
            }
            proptest::prop_assert_eq!(client_response(h.clone()), filtered(&h));
        }
    }

    proptest::proptest! {
        /// Whatever the client sends (dropped and passed names, `Connection` lists, repeated `anthropic-beta` values,
        /// its own `anthropic-version` or none), upstream gets what the two-pass building gave, for either kind of
        /// account.
        #[test]
        fn upstream_gets_what_the_two_pass_building_gave(
            entries in proptest::collection::vec((0usize..16, 0usize..8), 0..24),
            oauth in proptest::bool::ANY,
        ) {
            const NAMES: [&str; 16] = [
                "anthropic-beta", "anthropic-beta", "connection", "anthropic-version", "x-stainless-lang", "x-app",
                "user-agent", "content-type", "host", "x-api-key", "authorization", "origin", "sec-fetch-mode",
                "x-custom-hop", "x-forwarded-for", "x-claude-code-session-id",
            ];
            const VALUES: [&str; 8] = [
                "a", "a, b", "b,oauth-2025-04-20", " , c ,", "keep-alive, X-Custom-Hop", "x-app",
                "anthropic-beta, anthropic-version", "2023-06-01",
            ];
            let mut h = HeaderMap::new();
            for (name, value) in entries {
                h.append(HeaderName::from_static(NAMES[name]), HeaderValue::from_static(VALUES[value]));
            }
            let kind = if oauth { AccountKind::Oauth } else { AccountKind::ApiKey };
            let a = account(kind);
            proptest::prop_assert_eq!(upstream_request(&h, &a), before::upstream_request(&h, &a));
        }
    }

    /// The names sent as static text are the client's names.
    #[test]
    fn static_names_are_the_clients() {
        for n in ["anthropic-version", "x-stainless-lang", "x-app"] {
            assert_eq!(static_name(n).unwrap().as_str(), n);
        }
        assert!(static_name("x-custom").is_none());
    }
}
