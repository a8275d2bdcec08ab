//! The processes and paths of the suite's main part — the fast upstream, nginx in front of it, the gateway in front of
//! it, LiteLLM — and the side-by-side scenarios that run on all of them (sections 1–5).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;

use crate::client::{Client, ClientKind, Target};
use crate::load::LoadResult;
use crate::nginx::Nginx;
use crate::plan::{body, one_line, per_k, say, Plan, Setup, MODEL, UPSTREAM_KEY};
use crate::procs::{self, FastUpstream, Gateway, GatewayDir, HyperProxy, LiteLlm, Sim, CLIENT_KEY};
use crate::results::{ClientCmp, Large, Paths, Results};
use crate::runner::{self, Scenario, Shape};
use crate::stream::{self, StreamResult};
use crate::upstream::FRAME_EVENTS;

/// The processes and paths every measurement of the main part shares.
pub struct Env<'a> {
    pub setup: &'a Setup,
    pub plan: &'a Plan,
    pub client: Client,
    /// The simulator: the token endpoint (kept running for the gateway).
    pub sim: Sim,
    pub up: FastUpstream,
    pub gw: Gateway,
    pub gdir: GatewayDir,
    /// Kept running while its target is measured.
    pub _nginx: Option<Nginx>,
    pub litellm: Option<(LiteLlm, Target)>,
    pub direct: Target,
    pub gateway: Target,
    pub nginx_target: Option<Target>,
    /// Kept running while its target is measured.
    pub _hyper: HyperProxy,
    pub hyper_target: Target,
    pub small: Bytes,
}

impl Env<'_> {
    /// The paths measured side by side: direct, nginx (when there is one), the minimal hyper proxy, the gateway.
    fn side_by_side(&self) -> Vec<Target> {
        let mut v = vec![self.direct.clone()];
        v.extend(self.nginx_target.clone());
        v.push(self.hyper_target.clone());
        v.push(self.gateway.clone());
        v
    }

    /// Results in the order of [`Env::side_by_side`], and the peer's, as [`Paths`].
    fn split<T: Default>(&self, mut v: Vec<T>, litellm: Option<T>) -> Paths<T> {
        let gateway = v.pop().unwrap_or_default();
        let hyper = v.pop();
        let nginx = if self.nginx_target.is_some() {
            v.pop()
        } else {
            None
        };
        Paths {
            direct: v.pop().unwrap_or_default(),
            nginx,
            hyper,
            gateway,
            litellm,
        }
    }

    fn peer(&self) -> Option<&Target> {
        self.litellm.as_ref().map(|(_, t)| t)
    }

    /// `shape` on direct, nginx and the gateway in alternating rounds, then on the peer once when `with_peer`.
    pub async fn json(
        &self,
        shape: Shape,
        body: &Bytes,
        duration: Duration,
        with_peer: bool,
    ) -> Paths<LoadResult> {
        self.json_in_rounds(shape, body, duration, self.plan.rounds, with_peer)
            .await
    }

    /// An open loop at `rate` on direct, nginx, the hyper proxy and the gateway at once, paired (request `i` to path
    /// `i mod n`, [`runner::paired`]), then on the peer alone for [`Plan::peer_duration`] when `with_peer`
    /// (LiteLLM's queue would delay the others').
    pub async fn json_paired(
        &self,
        rate: f64,
        body: &Bytes,
        duration: Duration,
        with_peer: bool,
    ) -> Paths<LoadResult> {
        let paths = self.side_by_side();
        let v = runner::paired(&self.client, self.plan, &paths, rate, body, duration).await;
        let peer = match self.peer().filter(|_| with_peer) {
            Some(t) => {
                let (one, peer_duration) = (std::slice::from_ref(t), self.plan.peer_duration);
                runner::paired(&self.client, self.plan, one, rate, body, peer_duration)
                    .await
                    .pop()
            }
            None => None,
        };
        self.split(v, peer)
    }

    /// [`Env::json`] with the side-by-side paths alternating in `rounds` rounds.
    pub async fn json_in_rounds(
        &self,
        shape: Shape,
        body: &Bytes,
        duration: Duration,
        rounds: usize,
        with_peer: bool,
    ) -> Paths<LoadResult> {
        let paths = self.side_by_side();
        let s = Scenario {
            paths: &paths,
            shape,
            body,
            duration,
            rounds,
        };
        let v = runner::measure(&self.client, self.plan, &s).await;
        let peer = match self.peer().filter(|_| with_peer) {
            Some(t) => {
                let s = Scenario {
                    paths: std::slice::from_ref(t),
                    rounds: 1,
                    ..s
                };
                runner::measure(&self.client, self.plan, &s).await.pop()
            }
            None => None,
        };
        self.split(v, peer)
    }
}

pub fn log_paths<T>(what: &str, p: &Paths<T>, line: impl Fn(&T) -> String) {
    for (name, r) in p.named() {
        say(format!("{what} {name}: {}", line(r)));
    }
}

pub fn load_line(r: &LoadResult) -> String {
    format!(
        "{:.0} req/s, p50 {} p99 {} µs, proxy CPU {:.2} s, upstream CPU {:.2} s, errors {}",
        r.rps(),
        r.latency.p50,
        r.latency.p99,
        r.cpu_proxy,
        r.cpu_sim,
        r.errors.describe()
    )
}

/// nginx in front of the fast upstream, when it is installed and starts.
async fn start_nginx(
    setup: &Setup,
    direct: &Target,
    results: &mut Results,
) -> anyhow::Result<(Option<Nginx>, Option<Target>)> {
    let bin = match &setup.nginx {
        Ok(bin) => bin,
        Err(why) => {
            results.nginx_absent = why.clone();
            return Ok((None, None));
        }
    };
    match Nginx::start(bin, direct.addr).await {
        Ok(n) => {
            say(format!("nginx {} on {}", n.version, n.base_url));
            results.nginx_version = Some(n.version.clone());
            let t = Target::new(
                &n.base_url,
                ("x-api-key", UPSTREAM_KEY),
                Some(n.proc.pid()),
                direct.sim_pid,
            )?;
            Ok((Some(n), Some(t)))
        }
        Err(e) => {
            results.nginx_absent = format!("nginx failed to start: {}", one_line(&e));
            Ok((None, None))
        }
    }
}

/// LiteLLM in front of the fast upstream, when asked for and it answers.
async fn start_peer(
    setup: &Setup,
    up: &FastUpstream,
    small: &Bytes,
    results: &mut Results,
) -> Option<(LiteLlm, Target)> {
    let exe = setup.litellm.as_ref()?;
    match start_litellm(exe, &up.base_url, up.proc.pid(), small).await {
        Ok((ll, target)) => {
            results.litellm_version = Some(ll.version.clone());
            Some((ll, target))
        }
        Err(e) => {
            say(format!("LiteLLM unavailable: {e:#}"));
            results.litellm_absent =
                format!("LiteLLM failed to start or to answer: {}", one_line(&e));
            None
        }
    }
}

/// Starts the processes of the main part: the simulator (token endpoint), the fast upstream, a gateway in front of
/// it, nginx and LiteLLM when available, and picks the load client.
pub async fn start_env<'a>(setup: &'a Setup, results: &mut Results) -> anyhow::Result<Env<'a>> {
    let plan = &setup.plan;
    let sim = Sim::start(&setup.simulator_bin, &[])?;
    let up = FastUpstream::start(
        plan.upstream_threads,
        plan.stream_events,
        plan.stream_delay_ms,
    )?;
    say(format!(
        "simulator on {}, fast upstream on {}",
        sim.base_url, up.base_url
    ));
    let gdir = GatewayDir::with_upstream(None, "main", &up.base_url, &sim.token_url())?;
    gdir.cli(
        &setup.gateway_bin,
        &["accounts", "add-key", "--name", "bench", UPSTREAM_KEY],
    )?;
    let gw = Gateway::start(&setup.gateway_bin, &gdir)?;
    say(format!("gateway on {}", gw.base_url));
    let up_pid = up.proc.pid();
    let direct = Target::new(&up.base_url, ("x-api-key", UPSTREAM_KEY), None, up_pid)?;
    let gateway = Target::new(
        &gw.base_url,
        ("x-api-key", CLIENT_KEY),
        Some(gw.proc.pid()),
        up_pid,
    )?;
    let small = body(plan.body_bytes, false, None);
    let (nginx, nginx_target) = start_nginx(setup, &direct, results).await?;
    let litellm = start_peer(setup, &up, &small, results).await;
    let hyper = HyperProxy::start(&up.base_url)?;
    let hyper_target = Target::new(
        &hyper.base_url,
        ("x-api-key", UPSTREAM_KEY),
        Some(hyper.proc.pid()),
        up_pid,
    )?;
    say(format!("hyper proxy on {}", hyper.base_url));
    let (client, cmp) = pick_client(setup, &direct, &small).await?;
    results.client_cmp = Some(cmp);
    Ok(Env {
        setup,
        plan,
        client,
        sim,
        up,
        gw,
        gdir,
        _nginx: nginx,
        litellm,
        direct,
        gateway,
        nginx_target,
        _hyper: hyper,
        hyper_target,
        small,
    })
}

/// Which load client adds less: the same closed loop on the direct path with each; returns the one asked for.
async fn pick_client(
    setup: &Setup,
    direct: &Target,
    small: &Bytes,
) -> anyhow::Result<(Client, ClientCmp)> {
    let plan = &setup.plan;
    let hyper = Client::new(ClientKind::Hyper)?;
    let reqwest = Client::new(ClientKind::Reqwest)?;
    let shape = Shape::Closed(plan.concurrency);
    let mut cmp = Vec::new();
    for c in [&hyper, &reqwest] {
        let _ = runner::once(c, plan, direct, shape, small, plan.warmup).await;
        cmp.push(runner::once(c, plan, direct, shape, small, plan.client_cmp).await);
    }
    let reqwest_r = cmp.pop().unwrap_or_default();
    let hyper_r = cmp.pop().unwrap_or_default();
    say(format!(
        "client: hyper {:.0} req/s ({:.3} CPU s/1k), reqwest {:.0} req/s ({:.3} CPU s/1k)",
        hyper_r.rps(),
        per_k(hyper_r.cpu_client, hyper_r.ok),
        reqwest_r.rps(),
        per_k(reqwest_r.cpu_client, reqwest_r.ok)
    ));
    let client = match setup.client {
        ClientKind::Hyper => hyper,
        ClientKind::Reqwest => reqwest,
    };
    Ok((
        client,
        ClientCmp {
            hyper: hyper_r,
            reqwest: reqwest_r,
        },
    ))
}

/// Stops LiteLLM (it is measured in the first sections only) and nginx's siblings keep running.
pub fn drop_peer(mut env: Env<'_>) -> Env<'_> {
    env.litellm = None;
    env
}

/// Streams from the fast upstream, direct, through nginx and through the gateway started in turn, then LiteLLM's.
pub async fn streaming(env: &Env<'_>) -> Paths<StreamResult> {
    let plan = env.plan;
    let text_events = plan.stream_events.saturating_sub(FRAME_EVENTS).max(1);
    let sbody = body(
        plan.body_bytes,
        true,
        Some((text_events, plan.stream_delay_ms)),
    );
    let paths = env.side_by_side();
    let expected = Some(plan.stream_events);
    let v = runner::streams(
        plan,
        &paths,
        &sbody,
        plan.stream_rate,
        plan.stream_duration,
        expected,
    )
    .await;
    let peer = match env.peer() {
        Some(t) => runner::streams(
            plan,
            std::slice::from_ref(t),
            &sbody,
            plan.stream_rate,
            plan.stream_duration,
            None,
        )
        .await
        .pop(),
        None => None,
    };
    let p = env.split(v, peer);
    log_paths("streaming", &p, |r: &StreamResult| {
        format!(
            "{} streams, first event p90 {} p99 {} µs, gap p99 {} µs, shared reads {}, errors {}",
            r.streams_ok,
            r.ttfe.p90,
            r.ttfe.p99,
            r.gap.p99,
            r.shared_read,
            r.errors.describe()
        )
    });
    p
}

/// 700 KB requests on direct and the gateway (and nginx), with the gateway's RSS sampled throughout.
pub async fn large(env: &Env<'_>) -> anyhow::Result<Large> {
    let plan = env.plan;
    let big = body(plan.large_bytes, false, None);
    let pid = env.gw.proc.pid();
    let rss_before_mb = procs::rss_mb(pid)?;
    let sampler = crate::memory::RssSampler::start(pid);
    let p = env
        .json(
            Shape::Open(plan.large_rate),
            &big,
            plan.large_duration,
            false,
        )
        .await;
    let rss_peak_mb = sampler.stop().await;
    let rss_after_mb = procs::rss_mb(pid)?;
    log_paths("large bodies", &p, load_line);
    Ok(Large {
        paths: p,
        rss_before_mb,
        rss_peak_mb,
        rss_after_mb,
    })
}

async fn start_litellm(
    exe: &Path,
    upstream: &str,
    upstream_pid: u32,
    small: &Bytes,
) -> anyhow::Result<(LiteLlm, Target)> {
    say("starting LiteLLM (its imports take a while)");
    let ll = LiteLlm::start(exe, upstream, MODEL).await?;
    let target = Target::new(
        &ll.base_url,
        ("authorization", "Bearer sk-bench-litellm"),
        Some(ll.proc.pid()),
        upstream_pid,
    )?;
    // One of each kind of request must work before it is measured.
    let client = Client::new(ClientKind::Hyper)?;
    let a = client.messages(&target, small).await?;
    if a.status != 200 {
        return Err(anyhow!("POST /v1/messages answered HTTP {}", a.status));
    }
    let sbody = body(small.len(), true, None);
    let obs = stream::one_stream(
        target.addr,
        stream::request_bytes(&target, &sbody),
        Instant::now(),
    )
    .await?;
    if obs.status != 200 || !obs.saw_stop {
        return Err(anyhow!(
            "streaming POST /v1/messages answered HTTP {} with {} events (message_stop: {})",
            obs.status,
            obs.events,
            obs.saw_stop
        ));
    }
    say(format!("LiteLLM {} on {}", ll.version, ll.base_url));
    Ok((ll, target))
}
