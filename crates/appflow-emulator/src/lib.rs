//! A local Amazon AppFlow API for tests, the demo and benchmarks.
//!
//! It serves `POST /list-flows`, `POST /describe-flow` and
//! `POST /describe-flow-execution-records` over REST-JSON on loopback with the member
//! names, pagination and error shapes of the real service, from a seeded history
//! ([`GenConfig`]). Tests change that history ([`Emulator::add_runs`],
//! [`Emulator::finish_open_runs`], [`Emulator::drop_runs_before`]), inject faults
//! ([`Faults`]) and read call counters ([`Counters`]), through this library or the
//! admin endpoints under `/_emulator/` (see `server.rs`). One process can serve several
//! accounts and regions ([`Tenants`]), each request by its SigV4 credential, and plays
//! STS `GetCallerIdentity` and `AssumeRole` for them.

mod admin;
#[cfg(feature = "client")]
pub mod client;
mod generate;
mod model;
mod server;
mod state;
mod sts;
mod tenants;

pub use generate::{DEFAULT_ACCOUNT, DEFAULT_REGION, GenConfig, generate, now_millis};
pub use model::{
    ErrorInfo, ExecutionDetails, ExecutionRecord, ExecutionResult, Flow, FlowDefinition,
    MetadataCatalogDetail, Millis, RegistrationOutput,
};
pub use server::{RunningEmulator, loopback};
pub use state::{AddRuns, Call, Counters, Emulator, Faults, OpCounter, Phase};
pub use tenants::{Tenants, account_of_key, key_of_account};
