//! The example gateway's modules, for the tests and benches that drive its router in process.
//! A crate that includes this imports the modules at its root (`use gateway_app::{app, budget,
//! idle, log, mock, proxy};`, and `log_format`, `log_writer`, `serve` when it uses them), as the
//! example's modules name their siblings `crate::log`, `crate::mock` and so on.

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/app.rs"]
pub(crate) mod app;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/budget.rs"]
pub(crate) mod budget;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/idle.rs"]
pub(crate) mod idle;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/log.rs"]
pub(crate) mod log;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/log_format.rs"]
pub(crate) mod log_format;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/log_writer.rs"]
pub(crate) mod log_writer;
// The mock's own unit test is not needed here, and its `use super::*` would go unused.
#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../../examples/gateway/mock.rs"]
pub(crate) mod mock;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/proxy.rs"]
pub(crate) mod proxy;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/gateway/serve.rs"]
pub(crate) mod serve;
