//! The order of the suite's sections: the side-by-side part on the fast upstream (`env`), then the scenarios that
//! need processes of their own (memory, stampede). What a run is and what it measured are `crate::plan`'s and
//! `crate::results`'.

use crate::client::Client;
use crate::env::{drop_peer, large, load_line, log_paths, start_env, streaming, Env};
use crate::features;
use crate::plan::{one_line, say, Setup};
use crate::results::Results;
use crate::runner::Shape;

/// Runs every scenario and returns what they measured.
pub async fn run(setup: &Setup) -> anyhow::Result<Results> {
    let plan = &setup.plan;
    let mut results = Results {
        client_kind: format!("{:?}", setup.client).to_lowercase(),
        litellm_absent: "not requested (run bench/run.sh, or pass --litellm PATH)".into(),
        nginx_absent: "not requested".into(),
        upstream_threads: plan.upstream_threads,
        ..Results::default()
    };
    let env = start_env(setup, &mut results).await?;
    proxy_sections(&env, &mut results).await;
    let env = drop_peer(env);
    feature_sections(&env, &mut results).await;
    drop(env);
    if plan.wants("memory") {
        let m = crate::memory::run(setup).await;
        results.memory = noted(&mut results, "memory", m);
    }
    if plan.wants("stampede") {
        let s = match Client::new(setup.client) {
            Ok(client) => crate::stampede::run(setup, &client).await,
            Err(e) => Err(e),
        };
        results.stampede = noted(&mut results, "stampede", s);
    }
    Ok(results)
}

/// A section's result; a failed section leaves a note in the report instead of ending the run.
fn noted<T>(results: &mut Results, section: &str, r: anyhow::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            say(format!("the {section} section failed: {e:#}"));
            results
                .notes
                .push(format!("The {section} section failed: {}", one_line(&e)));
            None
        }
    }
}

/// Sections 1–4: direct, nginx, the gateway and the peer side by side.
async fn proxy_sections(env: &Env<'_>, results: &mut Results) {
    let plan = env.plan;
    if plan.wants("latency") {
        for &rate in &plan.rates {
            let p = env
                .json_paired(rate, &env.small, plan.latency_duration, true)
                .await;
            log_paths(&format!("latency {rate} req/s"), &p, load_line);
            results.latency.push((rate, p));
        }
    }
    if plan.wants("throughput") {
        let shape = Shape::Closed(plan.concurrency);
        let p = env
            .json(shape, &env.small, plan.throughput_duration, true)
            .await;
        log_paths("throughput", &p, load_line);
        results.throughput = Some(p);
    }
    if plan.wants("cpu") {
        for &rate in &plan.cpu_rates {
            let p = env
                .json_in_rounds(
                    Shape::Open(rate),
                    &env.small,
                    plan.cpu_duration,
                    plan.cpu_rounds,
                    false,
                )
                .await;
            log_paths(&format!("CPU at {rate} req/s"), &p, load_line);
            results.cpu.push((rate, p));
        }
    }
    if plan.wants("streaming") {
        results.streaming = Some(streaming(env).await);
    }
}

/// Sections 5–7: large bodies, the newer features' costs, pool scale.
async fn feature_sections(env: &Env<'_>, results: &mut Results) {
    let plan = env.plan;
    if plan.wants("large") {
        let l = large(env).await;
        results.large = noted(results, "large bodies", l);
    }
    if plan.wants("keys") {
        let (bin, client) = (&env.setup.gateway_bin, &env.client);
        let k = features::keys(
            bin,
            &env.gdir,
            &env.gw,
            client,
            plan,
            &env.gateway,
            &env.small,
        );
        let k = k.await;
        results.keys = noted(results, "keys", k);
    }
    if plan.wants("routes") {
        let r = features::routes(
            &env.client,
            plan,
            &env.gw,
            &env.up.base_url,
            env.up.proc.pid(),
        );
        let r = r.await;
        results.routes = noted(results, "routes", r);
    }
    if plan.wants("pool") {
        let token_url = env.sim.token_url();
        let p = crate::pool::run(env.setup, &env.client, &env.up, &token_url).await;
        results.pool = noted(results, "pool", p);
    }
}
