//! Random identifiers in Anthropic's shapes: request ids, token and key suffixes, UUIDs.

use rand::distr::Alphanumeric;
use rand::Rng;

pub(crate) fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

pub(crate) fn random_uuid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub(crate) fn request_id() -> String {
    format!("req_sim{}", random_alnum(24))
}
