//! Client keys at run time: the live key ring (lookup, counters, admission against limits, `Tenant` in request
//! extensions) and the one create/change/revoke path the CLI and the admin API share. Above `store` and `keys` (the key
//! model), which know nothing of this module.

pub mod manage;
pub mod ring;

pub use ring::{KeyRing, Tenant};
