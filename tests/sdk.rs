//! The official OpenAI Python SDK against the example gateway (zero-config demo), through
//! `tools/sdk_check.py`: every call works, every MaaS refusal arrives as the SDK's typed error,
//! and a stream whose upstream stalls mid-way (a second gateway, in front of an upstream that
//! does) raises the SDK's `APIError` with APIG.0203 after what had come.
//! Skipped when `python3` with the `openai` package is missing, except in CI (`CI` set), where
//! `.ci/run` installs it and a missing SDK fails the run.

mod common;
mod gateway_app;
use gateway_app::{app, budget, idle, log, mock, proxy};

use std::convert::Infallible;
use std::process::Command;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use hyper::body::Incoming;

/// An upstream whose every answer is an event stream that gives one chunk, then nothing, ever.
async fn stalling_upstream() -> std::net::SocketAddr {
    common::serve_hyper(tower::service_fn(|_: Request<Incoming>| async {
        let first = Bytes::from_static(
            b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
        );
        let pieces = futures_util::stream::once(std::future::ready(first))
            .chain(futures_util::stream::pending())
            .map(|piece| Ok::<_, Infallible>(http_body::Frame::data(piece)));
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(http_body_util::StreamBody::new(pieces))
                .unwrap(),
        )
    }))
    .await
}

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
    let upstream = stalling_upstream().await;
    let stalling = app::parse_config(&format!(
        "upstream_timeout_ms = 300\n[[keys]]\nkey = \"{}\"\n[[models]]\nname = \"up\"\ncontext_length = 4096\nupstream = \"http://{upstream}\"\n",
        app::DEMO_KEY
    ))
    .unwrap();
    let stalling = common::serve_axum_with_peer(app::router(&stalling).unwrap()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/sdk_check.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(format!("http://{gateway}/v1"))
            .arg(format!("http://{stalling}/v1"))
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
        stdout.lines().filter(|l| l.starts_with("ok ")).count() == 11,
        "{stdout}"
    );
    assert!(stdout.contains("ok   stream stalled mid-way"), "{stdout}");
}
