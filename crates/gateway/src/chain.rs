//! An error and its sources on one line ("a: b: c"), for messages that must say the root cause (upstream transport
//! errors, the token endpoint, alert deliveries). A leaf: `error` and `upstream` both use it.

/// `e`, then each of its sources, joined by ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connecting failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn every_source_follows_its_error() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            super::error_chain(&Outer(refused)),
            "connecting failed: refused"
        );
        let plain = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        assert_eq!(super::error_chain(&plain), "timed out");
    }
}
