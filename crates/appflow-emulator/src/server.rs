//! The HTTP front: AppFlow's REST-JSON operations, routed with the `/_emulator/` admin API.
//!
//! The admin API (`/_emulator/`) is `admin.rs`'s.
//!
//! It also answers STS (`POST /`, AWS query protocol, for `AWS_ENDPOINT_URL_STS`):
//! `GetCallerIdentity` with the caller's account, and `AssumeRole` with credentials of
//! the role's account (its key encodes it, see `tenants.rs`), trusting every caller.

// Handlers answer AWS errors early as axum `Response`s; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::admin::{
    admin_add_runs, admin_calls, admin_counters, admin_delete_flows, admin_drop_runs, admin_faults,
    admin_finish_runs, admin_flows, admin_recreate_flows, admin_reset_counters, admin_set_faults,
    admin_set_flow_status, admin_tenants,
};
use crate::model::{ExecutionRecord, Millis};
use crate::state::Emulator;
use crate::sts::sts;
use crate::tenants::{Tenant, Tenants};

const DEFAULT_MAX_RESULTS: i64 = 20;

/// An emulator serving on a loopback port; stops when dropped.
pub struct RunningEmulator {
    endpoint: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL_APPFLOW`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops serving and waits until the server has closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Emulator {
    /// The axum router serving this emulator alone (every request, whatever its
    /// credential).
    pub fn router(&self) -> Router {
        self.tenants().router()
    }

    /// Serves on `addr` (port 0 picks a free one) from the current tokio runtime.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningEmulator> {
        self.tenants().serve(addr).await
    }

    fn tenants(&self) -> Tenants {
        let account = self.lock().account.clone();
        Tenants::single(self.clone(), &account, "")
    }
}

impl Tenants {
    /// The axum router serving every tenant, each request by its credential.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(sts))
            .route("/list-flows", post(list_flows))
            .route("/describe-flow", post(describe_flow))
            .route("/describe-flow-execution-records", post(describe_records))
            .route("/_emulator/tenants", get(admin_tenants))
            .route("/_emulator/flows", get(admin_flows))
            .route("/_emulator/counters", get(admin_counters))
            .route("/_emulator/counters/reset", post(admin_reset_counters))
            .route("/_emulator/calls", get(admin_calls))
            .route("/_emulator/faults", get(admin_faults).put(admin_set_faults))
            .route("/_emulator/add-runs", post(admin_add_runs))
            .route("/_emulator/finish-runs", post(admin_finish_runs))
            .route("/_emulator/drop-runs", post(admin_drop_runs))
            .route("/_emulator/delete-flows", post(admin_delete_flows))
            .route("/_emulator/recreate-flows", post(admin_recreate_flows))
            .route("/_emulator/set-flow-status", post(admin_set_flow_status))
            .with_state(self.clone())
    }

    /// Serves on `addr` (port 0 picks a free one) from the current tokio runtime.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningEmulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "appflow-emulator stopped");
            }
        });
        Ok(RunningEmulator {
            endpoint,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// An AWS REST-JSON error: the type in `x-amzn-ErrorType`, `{"message": ...}` in the body.
fn aws_error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Response {
    let mut resp = (status, axum::Json(json!({ "message": message.into() }))).into_response();
    resp.headers_mut()
        .insert("x-amzn-ErrorType", HeaderValue::from_static(kind));
    resp
}

fn validation(message: impl Into<String>) -> Response {
    aws_error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

pub(crate) fn ok_json(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(e) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            e.to_string(),
        ),
    }
}

/// Counts the call and applies the injected faults; `Some(response)` when a fault
/// answers instead of the operation. The call is in flight (logged with the calls
/// in flight when it came) until its latency is over and its answer decided.
async fn inject(emu: &Emulator, op: &str, flow: Option<&str>) -> Option<Response> {
    let (latency, counted_throttle, logged) = {
        let mut st = emu.lock();
        st.counters
            .operations
            .entry(op.to_string())
            .or_default()
            .calls += 1;
        if let Some(flow) = flow {
            *st.counters
                .describe_calls_by_flow
                .entry(flow.to_string())
                .or_default() += 1;
        }
        let counted_throttle = st.arrive();
        let logged = st.start_call(op);
        (st.faults.latency_ms, counted_throttle, logged)
    };
    // In flight until answered, also when the client goes away meanwhile (axum then
    // drops this future).
    let in_flight = InFlight(emu);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    drop(in_flight);
    let mut st = emu.lock();
    let st = &mut *st;
    if st.faults.access_denied {
        let account = st.account.clone();
        return Some(aws_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!(
                "User: arn:aws:sts::{account}:assumed-role/appflow-export/appflow-export is not authorized to perform: appflow:{op} (denied by appflow-emulator)"
            ),
        ));
    }
    if st.faults.fail_next > 0 {
        st.faults.fail_next -= 1;
        st.counters
            .operations
            .entry(op.to_string())
            .or_default()
            .failed += 1;
        return Some(aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "An internal error occurred (injected by appflow-emulator).",
        ));
    }
    let p = st.faults.throttle_fraction.clamp(0.0, 1.0);
    let over_rate = !st.within_rate();
    if counted_throttle || over_rate || (p > 0.0 && st.rng.random_bool(p)) {
        st.counters
            .operations
            .entry(op.to_string())
            .or_default()
            .throttled += 1;
        st.call_throttled(logged);
        return Some(aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Rate exceeded",
        ));
    }
    None
}

/// A call counted in flight; dropped, it no longer is.
struct InFlight<'a>(&'a Emulator);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| validation("The request body is not a JSON object."))
}

fn max_results(req: &Value) -> Result<usize, Response> {
    match req.get("maxResults") {
        None | Some(Value::Null) => Ok(DEFAULT_MAX_RESULTS as usize),
        Some(v) => match v.as_i64() {
            Some(n @ 1..=100) => Ok(n as usize),
            _ => Err(validation(format!(
                "1 validation error detected: Value '{v}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100"
            ))),
        },
    }
}

/// The opaque pagination token: base64 of a small JSON document.
#[derive(Serialize, Deserialize)]
struct Token {
    /// The flow the token belongs to (empty for ListFlows).
    f: String,
    /// Offset into the (shuffled) order; or, newest-first, the last record returned.
    #[serde(default)]
    o: Option<usize>,
    #[serde(default)]
    s: Option<i64>,
    #[serde(default)]
    i: Option<String>,
}

fn encode_token(t: &Token) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(t).unwrap_or_default())
}

/// Adds `nextToken` when there is a next page; AWS leaves the member out otherwise.
fn with_token(mut body: Value, next: Option<String>) -> Value {
    if let (Some(token), Some(obj)) = (next, body.as_object_mut()) {
        obj.insert("nextToken".to_string(), Value::String(token));
    }
    body
}

fn decode_token(req: &Value, flow: &str) -> Result<Option<Token>, Response> {
    let Some(raw) = req.get("nextToken").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    raw.as_str()
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .and_then(|b| serde_json::from_slice::<Token>(&b).ok())
        .filter(|t| t.f == flow)
        .map(Some)
        .ok_or_else(|| validation("Invalid nextToken"))
}

async fn list_flows(Tenant(emu): Tenant, body: Bytes) -> Response {
    if let Some(resp) = inject(&emu, "ListFlows", None).await {
        return resp;
    }
    let req = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let (max, token) = match (max_results(&req), decode_token(&req, "")) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let start = token.and_then(|t| t.o).unwrap_or(0);
    let st = emu.lock();
    let without_time = st.faults.listing_without_time;
    let flows: Vec<_> = st
        .flows
        .values()
        .skip(start)
        .take(max)
        .map(|f| {
            let mut def = f.definition_now();
            if let Some(details) = def
                .last_run_execution_details
                .as_mut()
                .filter(|_| without_time)
            {
                details.most_recent_execution_time = None;
            }
            def
        })
        .collect();
    let next = (start + max < st.flows.len()).then(|| {
        encode_token(&Token {
            f: String::new(),
            o: Some(start + max),
            s: None,
            i: None,
        })
    });
    drop(st);
    ok_json(&with_token(json!({ "flows": flows }), next))
}

fn flow_name(req: &Value) -> Result<String, Response> {
    match req.get("flowName").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(validation(
            "1 validation error detected: Value null at 'flowName' failed to satisfy constraint: Member must not be null",
        )),
    }
}

fn not_found(name: &str) -> Response {
    aws_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        format!("Flow with name {name} does not exist."),
    )
}

async fn describe_flow(Tenant(emu): Tenant, body: Bytes) -> Response {
    if let Some(resp) = inject(&emu, "DescribeFlow", None).await {
        return resp;
    }
    let name = match parse_body(&body).and_then(|r| flow_name(&r)) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let st = emu.lock();
    let Some(flow) = st.flows.get(&name) else {
        return not_found(&name);
    };
    let def = flow.definition_now();
    drop(st);
    ok_json(&without_nulls(json!({
        "flowArn": def.flow_arn,
        "description": def.description,
        "flowName": def.flow_name,
        "flowStatus": def.flow_status,
        "sourceFlowConfig": {
            "connectorType": def.source_connector_type,
            "sourceConnectorProperties": {},
        },
        "destinationFlowConfigList": [{
            "connectorType": def.destination_connector_type,
            "destinationConnectorProperties": {},
        }],
        "triggerConfig": { "triggerType": def.trigger_type },
        "lastRunExecutionDetails": def.last_run_execution_details,
        "createdAt": def.created_at,
        "lastUpdatedAt": def.last_updated_at,
        "createdBy": def.created_by,
        "lastUpdatedBy": def.last_updated_by,
        "tags": def.tags,
    })))
}

/// Drops members whose value is null: AWS leaves absent members out.
fn without_nulls(mut body: Value) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    body
}

async fn describe_records(Tenant(emu): Tenant, body: Bytes) -> Response {
    let req = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let name = match flow_name(&req) {
        Ok(n) => n,
        Err(e) => return e,
    };
    if let Some(resp) = inject(&emu, "DescribeFlowExecutionRecords", Some(&name)).await {
        return resp;
    }
    let (max, token) = match (max_results(&req), decode_token(&req, &name)) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let first_page = token.is_none();
    let st = emu.lock();
    let Some(flow) = st.flows.get(&name) else {
        return not_found(&name);
    };
    let (page, next): (Vec<&ExecutionRecord>, Option<Token>) = if st.faults.shuffled {
        let mut order: Vec<&ExecutionRecord> = flow.records.iter().collect();
        let flow_seed = name.bytes().fold(st.seed, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        order.shuffle(&mut StdRng::seed_from_u64(flow_seed));
        let start = token.and_then(|t| t.o).unwrap_or(0);
        let next = (start + max < order.len()).then(|| Token {
            f: name.clone(),
            o: Some(start + max),
            s: None,
            i: None,
        });
        (order.into_iter().skip(start).take(max).collect(), next)
    } else {
        // Keyset pagination: stable while new runs are added at the front.
        let start = match token {
            Some(Token {
                s: Some(s),
                i: Some(i),
                ..
            }) => flow
                .records
                .partition_point(|r| (r.started_at, &r.execution_id) >= (Millis(s), &i)),
            Some(_) => return validation("Invalid nextToken"),
            None => 0,
        };
        let page: Vec<&ExecutionRecord> = flow.records.iter().skip(start).take(max).collect();
        let next = (start + page.len() < flow.records.len())
            .then(|| page.last())
            .flatten()
            .map(|r| Token {
                f: name.clone(),
                o: None,
                s: Some(r.started_at.0),
                i: Some(r.execution_id.clone()),
            });
        (page, next)
    };
    let malformed = st.faults.malformed_flows.contains(&name) && !(first_page && next.is_some());
    // Serialized straight from the stored records, under the lock: no copies.
    let body = serde_json::to_vec(&RecordsPage {
        flow_executions: &page,
        next_token: next.as_ref().map(encode_token),
    });
    drop(st);
    match body {
        Ok(mut bytes) => {
            if malformed {
                bytes.truncate(bytes.len() / 2);
            }
            ([("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            e.to_string(),
        ),
    }
}

/// A `DescribeFlowExecutionRecords` response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordsPage<'a> {
    flow_executions: &'a [&'a ExecutionRecord],
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// The address to bind on loopback.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
