//! claude-gateway: an HTTP gateway in front of the Anthropic Claude API with a pooled, self-refreshing credential
//! engine. See ARCHITECTURE.md for the module map and the invariants.

pub mod account;
mod admin;
mod affinity;
mod alerts;
mod anthropic;
mod attribution;
mod auth;
mod backoff;
mod body;
mod browser;
mod chain;
pub mod cli;
mod clock;
mod config;
mod dashboard;
mod dispatch;
mod error;
#[cfg(test)]
mod fuzz;
mod headers;
mod import;
mod json;
mod keys;
mod listener;
mod login;
mod oauth;
mod openai;
mod operator;
mod patch;
mod pool;
mod pricing;
mod proxy;
mod ratelimit;
mod refresh;
mod relay;
mod request_metrics;
mod server;
mod session;
mod sse;
mod state;
mod stats;
pub mod store;
mod tenants;
mod upstream;
mod usage;
mod view;
