//! What the operator surfaces (admin API, dashboard, alerts) keep in one replica: dashboard sessions, the login
//! throttle, OAuth logins waiting for their code, live request statistics, alerts, and who this replica is.

use chrono::{DateTime, Utc};

use crate::alerts::Alerts;
use crate::login::pending::PendingLogins;
use crate::oauth::OAuthClient;
use crate::session::{LoginThrottle, Sessions};
use crate::stats::LiveStats;

pub struct Operator {
    pub sessions: Sessions,
    pub throttle: LoginThrottle,
    pub logins: PendingLogins,
    pub stats: LiveStats,
    /// The OAuth client for logins started from the admin API.
    pub oauth: OAuthClient,
    /// This replica's name in the cluster view (host, process, a random suffix).
    pub replica_id: String,
    pub started_at: DateTime<Utc>,
    pub alerts: Alerts,
}

impl Operator {
    pub fn new(oauth: OAuthClient, started_at: DateTime<Utc>, alerts: Alerts) -> Operator {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        Operator {
            sessions: Sessions::default(),
            throttle: LoginThrottle::default(),
            logins: PendingLogins::default(),
            stats: LiveStats::default(),
            oauth,
            replica_id: format!(
                "{host}-{}-{:04x}",
                std::process::id(),
                rand::random::<u16>()
            ),
            started_at,
            alerts,
        }
    }
}
