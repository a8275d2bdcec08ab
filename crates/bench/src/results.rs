//! What a run measured, path by path and section by section: filled by the sections, read by the report and the
//! targets.

use crate::features;
use crate::load::LoadResult;
use crate::stream::StreamResult;

/// The paths of one measurement: direct (client → upstream), nginx, the minimal hyper proxy, the gateway, and the
/// peer.
#[derive(Debug, Clone, Default)]
pub struct Paths<T> {
    pub direct: T,
    pub nginx: Option<T>,
    pub hyper: Option<T>,
    pub gateway: T,
    pub litellm: Option<T>,
}

impl<T> Paths<T> {
    /// The measured paths with their names, in the report's order.
    pub fn named(&self) -> Vec<(&'static str, &T)> {
        let mut v = vec![("direct", &self.direct)];
        v.extend(self.nginx.as_ref().map(|n| ("nginx", n)));
        v.extend(self.hyper.as_ref().map(|h| ("hyper proxy", h)));
        v.push(("gateway", &self.gateway));
        v.extend(self.litellm.as_ref().map(|l| ("LiteLLM", l)));
        v
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientCmp {
    pub hyper: LoadResult,
    pub reqwest: LoadResult,
}

#[derive(Debug, Clone, Default)]
pub struct Large {
    pub paths: Paths<LoadResult>,
    pub rss_before_mb: f64,
    pub rss_peak_mb: f64,
    pub rss_after_mb: f64,
}

/// Everything a run measured.
#[derive(Debug, Default)]
pub struct Results {
    pub client_kind: String,
    pub client_cmp: Option<ClientCmp>,
    pub latency: Vec<(f64, Paths<LoadResult>)>,
    pub throughput: Option<Paths<LoadResult>>,
    /// CPU per request at fixed rates.
    pub cpu: Vec<(f64, Paths<LoadResult>)>,
    pub streaming: Option<Paths<StreamResult>>,
    pub large: Option<Large>,
    pub keys: Option<features::Keys>,
    pub routes: Option<features::Routes>,
    pub pool: Option<crate::pool::Pool>,
    pub upstream_threads: usize,
    /// nginx's version when it was measured, else why not.
    pub nginx_version: Option<String>,
    pub nginx_absent: String,
    pub memory: Option<crate::memory::Memory>,
    pub stampede: Option<crate::stampede::Stampede>,
    /// LiteLLM's version when it was measured.
    pub litellm_version: Option<String>,
    /// Why LiteLLM was not measured.
    pub litellm_absent: String,
    pub notes: Vec<String>,
    /// The callgrind profile's workloads (empty when there is none).
    pub profile: Vec<crate::profile::Phase>,
    pub profile_note: Option<String>,
    /// The heap of a gateway loading the memory scenario's accounts (massif), when profiled.
    pub heap: Option<crate::profile::Heap>,
}
