//! The upstream URI of a request: `upstream.base_url` followed by the client's path and query.
//!
//! Promise: the same URI as parsing `base_url + path_and_query` whole with the WHATWG URL parser (dot segments
//! resolved, characters it escapes escaped), which is what the request path sent before; but without parsing on
//! every request: a path and query made only of characters that parser keeps as they are is appended to the base
//! parsed once, and only others (dot segments, `%`, quotes, non-ASCII…) take the whole parse. The paths nearly
//! every request asks for ([`COMMON`]) have their URI made once, with the base.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use reqwest::Url;

use super::UpstreamError;

/// Paths (and queries) nearly every request asks for.
const COMMON: [&str; 5] = [
    "/v1/messages",
    "/v1/messages?beta=true",
    "/v1/messages/count_tokens",
    "/v1/messages/count_tokens?beta=true",
    "/v1/models",
];

/// `upstream.base_url`, parsed once.
#[derive(Debug, Clone)]
pub struct Base {
    /// The URI of each of the [`COMMON`] paths under this base (those it has one for), made once: a request for one
    /// of them costs a clone (reference counts) instead of building and checking the URI again.
    common: Vec<(&'static str, Uri)>,
    /// `None` when the base cannot be used as a prefix (no host, a query or fragment, credentials): every request
    /// then takes the whole parse of `raw + path_and_query`.
    fast: Option<Fast>,
    parsed: Option<Url>,
    raw: String,
}

#[derive(Debug, Clone)]
struct Fast {
    scheme: Scheme,
    authority: Authority,
    /// The base's path without its trailing `/`.
    prefix: String,
}

impl Base {
    pub fn new(base_url: &str) -> Base {
        let raw = base_url.trim_end_matches('/').to_string();
        let parsed = Url::parse(&raw)
            .ok()
            .filter(|u| u.query().is_none() && u.fragment().is_none());
        let fast = parsed.as_ref().and_then(Fast::of);
        let mut base = Base {
            common: Vec::new(),
            fast,
            parsed,
            raw,
        };
        base.common = COMMON
            .iter()
            .filter_map(|pq| Some((*pq, base.build(pq).ok()?)))
            .collect();
        base
    }

    /// The base URL as configured, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The URI of `path_and_query` (which starts with `/`) under this base.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        match self.common.iter().find(|(pq, _)| *pq == path_and_query) {
            Some((_, uri)) => Ok(uri.clone()),
            None => self.build(path_and_query),
        }
    }

    /// The URI of `path_and_query` under this base, made now.
    fn build(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        if let Some(fast) = self.fast.as_ref().filter(|_| kept_as_is(path_and_query)) {
            let mut full = String::with_capacity(fast.prefix.len() + path_and_query.len());
            full.push_str(&fast.prefix);
            full.push_str(path_and_query);
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(fast.scheme.clone());
            parts.authority = Some(fast.authority.clone());
            parts.path_and_query = Some(PathAndQuery::from_maybe_shared(full).map_err(invalid)?);
            return Uri::from_parts(parts).map_err(invalid);
        }
        let url = match &self.parsed {
            Some(base) => joined(base, path_and_query),
            None => Url::parse(&format!("{}{path_and_query}", self.raw)).map_err(invalid)?,
        };
        Uri::try_from(url.as_str()).map_err(invalid)
    }
}

fn invalid(_: impl std::fmt::Display) -> UpstreamError {
    // The cause names the URL, which clients have no business seeing.
    UpstreamError::Failed("the request's path is not a valid upstream URL".into())
}

impl Fast {
    fn of(url: &Url) -> Option<Fast> {
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Some(Fast {
            scheme: url.scheme().parse().ok()?,
            authority: authority.parse().ok()?,
            prefix: url.path().trim_end_matches('/').to_string(),
        })
    }
}

/// `base` with the client's path and query, as the whole parse gives it.
fn joined(base: &Url, path_and_query: &str) -> Url {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    let mut full = String::with_capacity(prefix.len() + path.len());
    full.push_str(prefix);
    full.push_str(path);
    url.set_path(&full);
    url.set_query(query);
    url
}

/// Whether the URL parser keeps this path and query exactly as they are: a path that starts with `/` and has no dot
/// segment, and only characters it never escapes or rewrites (no `%`, `\`, quotes, spaces, non-ASCII); a non-empty
/// query of the same characters (with `%` and `?`).
fn kept_as_is(path_and_query: &str) -> bool {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let plain = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            )
    };
    path.starts_with('/')
        && !path.contains("/.")
        && path.bytes().all(plain)
        && query
            .is_none_or(|q| !q.is_empty() && q.bytes().all(|b| plain(b) || b == b'%' || b == b'?'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(base: &str, pq: &str) -> String {
        let base = base.trim_end_matches('/');
        Url::parse(&format!("{base}{pq}"))
            .unwrap()
            .as_str()
            .to_string()
    }

    proptest! {
        /// The same URL as parsing `base_url + path_and_query` whole, for every request target hyper accepts.
        #[test]
        fn the_uri_is_the_url_of_base_and_path(
            base in prop::sample::select(vec![
                "http://127.0.0.1:8080", "https://api.anthropic.com", "http://h/api", "http://h/api/v2",
                "https://[::1]:9/x", "https://api.anthropic.com:443/", "HTTP://H:80/A",
            ]),
            pq in "/[a-zA-Z0-9._~%!$&'()*+,;=:@/\\\\\\[\\]\"{}|^`<>é-]{0,24}(\\?[a-zA-Z0-9._~%!$&'()*+,;=:@/?\\\\\"{}|^`é-]{0,24})?",
        ) {
            prop_assume!(http::uri::PathAndQuery::try_from(pq.as_str()).is_ok());
            let uri = Base::new(base).uri(&pq).unwrap();
            prop_assert_eq!(uri.to_string(), whole(base, &pq));
        }
    }

    #[test]
    fn a_query_and_dot_segments_come_out_as_the_whole_parse_gives_them() {
        for pq in [
            "/v1/messages",
            "/v1/messages?beta=true",
            "/v1/models?limit=1000",
            "/v1/./a/../messages?",
            "/v1/%2e%2e/x?a=b?c",
            "/v1/.hidden",
            "/",
        ] {
            let base = "http://h:1/api";
            assert_eq!(
                Base::new(base).uri(pq).unwrap().to_string(),
                whole(base, pq),
                "{pq}"
            );
        }
    }

    /// The URIs made once are those the whole parse gives, on every kind of base; a base that cannot take a path has
    /// no URI made for it.
    #[test]
    fn the_common_paths_have_their_uri_made_once() {
        for base in [
            "http://127.0.0.1:8080",
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "http://h/api/v2",
            "http://user:pw@h:1/api",
            "HTTP://H:80/A",
        ] {
            let b = Base::new(base);
            assert_eq!(b.common.len(), COMMON.len(), "{base}");
            for pq in COMMON {
                assert_eq!(
                    b.uri(pq).unwrap().to_string(),
                    whole(base, pq),
                    "{base}{pq}"
                );
                assert_eq!(b.uri(pq).unwrap(), b.build(pq).unwrap());
            }
        }
        assert!(Base::new("not a url").common.is_empty());
    }

    #[test]
    fn the_common_paths_take_the_fast_way() {
        assert!(kept_as_is("/v1/messages"));
        assert!(kept_as_is("/v1/messages?beta=true"));
        assert!(kept_as_is("/v1/models/claude-sonnet-4-5"));
        assert!(!kept_as_is("/v1/../x"));
        assert!(!kept_as_is("/v1/x?"));
        assert!(!kept_as_is("/v1/%2e%2e"));
        assert!(Base::new("https://api.anthropic.com").fast.is_some());
        assert!(Base::new("http://user:pw@h").fast.is_none());
    }
}
