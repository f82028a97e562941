//! The `/_emulator/` admin API: what tests and benchmarks read and change.
//!
//! Endpoints (JSON in, JSON out):
//! - `GET /_emulator/flows`: every flow with its runs (the ground truth tests compare with)
//! - `GET /_emulator/counters`, `POST /_emulator/counters/reset` (also empties the calls log)
//! - `GET /_emulator/calls`: every AppFlow call since, in arrival order, with the calls in
//!   flight when it came and whether it was throttled ([`Call`](crate::state::Call))
//! - `GET /_emulator/faults`, `PUT /_emulator/faults` ([`Faults`], missing keys = off;
//!   `schedule` changes them after so many calls)
//! - `POST /_emulator/add-runs` ([`AddRuns`]) -> `{"added": [[flow, execution_id], ...]}`
//! - `POST /_emulator/finish-runs` `{"flows": [...]}` -> `{"finished": n}`
//! - `POST /_emulator/drop-runs` `{"before": epoch_ms, "flows": [...]}` -> `{"dropped": n}`
//!   (`flows` optional: all flows)
//! - `POST /_emulator/delete-flows` `{"flows": [...]}` -> `{"deleted": n}`
//! - `POST /_emulator/recreate-flows` `{"flows": [...]}` -> `{"recreated": n}` (deleted
//!   and created again under the same name: a new `createdAt`, no runs)
//! - `POST /_emulator/set-flow-status` `{"flows": [...], "status": s}` -> `{"updated": n}`
//!
//! - `GET /_emulator/tenants`: `[{"account": a, "region": r}, ...]`
//!
//! Each admin endpoint acts on one tenant (an account and region, see `tenants.rs`):
//! `?account=A&region=R`, by default the first.

// Handlers answer bad requests early as axum `Response`s; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::ok_json;
use crate::state::{AddRuns, Faults};
use crate::tenants::{Admin, Tenants};

pub(crate) async fn admin_tenants(AxState(tenants): AxState<Tenants>) -> Response {
    let list: Vec<Value> = tenants
        .iter()
        .map(|((account, region), _)| json!({"account": account, "region": region}))
        .collect();
    ok_json(&list)
}

pub(crate) async fn admin_flows(Admin(emu): Admin) -> Response {
    ok_json(&emu.snapshot())
}

pub(crate) async fn admin_counters(Admin(emu): Admin) -> Response {
    ok_json(&emu.counters())
}

pub(crate) async fn admin_calls(Admin(emu): Admin) -> Response {
    ok_json(&emu.calls())
}

pub(crate) async fn admin_reset_counters(Admin(emu): Admin) -> Response {
    emu.reset_counters();
    ok_json(&emu.counters())
}

pub(crate) async fn admin_faults(Admin(emu): Admin) -> Response {
    ok_json(&emu.faults())
}

fn admin_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(if body.is_empty() { b"{}" } else { body })
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad admin request: {e}")).into_response())
}

pub(crate) async fn admin_set_faults(Admin(emu): Admin, body: Bytes) -> Response {
    match admin_body::<Faults>(&body) {
        Ok(f) => {
            emu.set_faults(f);
            ok_json(&emu.faults())
        }
        Err(e) => e,
    }
}

pub(crate) async fn admin_add_runs(Admin(emu): Admin, body: Bytes) -> Response {
    match admin_body::<AddRuns>(&body) {
        Ok(req) => ok_json(&json!({ "added": emu.add_runs(&req) })),
        Err(e) => e,
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FlowsReq {
    flows: Vec<String>,
}

pub(crate) async fn admin_finish_runs(Admin(emu): Admin, body: Bytes) -> Response {
    match admin_body::<FlowsReq>(&body) {
        Ok(req) => ok_json(&json!({ "finished": emu.finish_open_runs(&req.flows) })),
        Err(e) => e,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropReq {
    before: i64,
    #[serde(default)]
    flows: Vec<String>,
}

pub(crate) async fn admin_drop_runs(Admin(emu): Admin, body: Bytes) -> Response {
    match admin_body::<DropReq>(&body) {
        Ok(req) => ok_json(&json!({ "dropped": emu.drop_runs_before(req.before, &req.flows) })),
        Err(e) => e,
    }
}

pub(crate) async fn admin_delete_flows(Admin(emu): Admin, body: Bytes) -> Response {
    match admin_body::<FlowsReq>(&body) {
        Ok(req) => ok_json(&json!({ "deleted": emu.delete_flows(&req.flows) })),
        Err(e) => e,
    }
}

pub(crate) async fn admin_recreate_flows(Admin(emu): Admin, body: Bytes) -> Response {
    match admin_body::<FlowsReq>(&body) {
        Ok(req) => ok_json(&json!({ "recreated": emu.recreate_flows(&req.flows) })),
        Err(e) => e,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusReq {
    flows: Vec<String>,
    status: String,
}

pub(crate) async fn admin_set_flow_status(Admin(emu): Admin, body: Bytes) -> Response {
    match admin_body::<StatusReq>(&body) {
        Ok(req) => ok_json(&json!({ "updated": emu.set_flow_status(&req.flows, &req.status) })),
        Err(e) => e,
    }
}
