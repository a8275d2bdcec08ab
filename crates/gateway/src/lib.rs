//! claude-gateway: an HTTP gateway in front of the Anthropic Claude API with a pooled, self-refreshing credential
//! engine. See ARCHITECTURE.md for the module map and the invariants.

pub mod account;
pub mod admin;
pub mod affinity;
pub mod anthropic;
pub mod auth;
pub mod backoff;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod headers;
pub mod import;
pub mod login;
pub mod oauth;
pub mod openai;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod refresh;
pub mod relay;
pub mod server;
pub mod sse;
pub mod state;
pub mod store;
