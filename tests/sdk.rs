//! The official OpenAI Python SDK against the example gateway (zero-config demo), through
//! `tools/sdk_check.py`: every call works, every MaaS refusal arrives as the SDK's typed error.
//! Skipped when `python3` with the `openai` package is missing, except in CI (`CI` set), where
//! `.ci/run` installs it and a missing SDK fails the run.

mod common;
mod gateway_app;
use gateway_app::{app, idle, log, mock, proxy};

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_gets_typed_errors() {
    let sdk = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !sdk {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with the openai package is missing: CI must install it (pip install openai)"
        );
        eprintln!("python3 with the openai package not found: skipped");
        return;
    }
    let gateway = common::serve_axum_with_peer(app::router(&app::Config::default()).unwrap()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/sdk_check.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(format!("http://{gateway}/v1"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every check printed its line, and none failed.
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 8,
        "{stdout}"
    );
}
