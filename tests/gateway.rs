//! The national portal behind an OAuth2 gateway (national-portal.md, "Reaching the portal
//! through a gateway"): the mock's token endpoint and bearer checks, and the real daemon in
//! `national.auth = "oauth2"` mode against it: tokens that expire, a 401 renewed once, the
//! token endpoint down and refusing, and the whole promise kept, with the secret in no log.

mod common;

use std::time::Duration;

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

const CLIENT: (&str, &str) = ("dvc-sync", "dvc-sync-secret");

async fn token_request(n: &National, basic: Option<(&str, &str)>, form: &str) -> (u16, Value) {
    let mut request = n
        .http
        .post(n.url("/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn integrate(n: &National, bearer: Option<&str>, service: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"madonvi": "000.00.00.H58", "service": service});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let mut request = n.http.post(n.url("/integration")).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_mock_gateway_grants_tokens_to_its_client_and_refuses_calls_without_one() {
    let n = National::start_gateway(Faults { session_ttl_seconds: 1.0, ..Faults::default() }).await;
    // Credentials in HTTP Basic, or in the form.
    let (status, basic) = token_request(&n, Some(CLIENT), "grant_type=client_credentials").await;
    assert_eq!(status, 200, "{basic}");
    assert_eq!(basic["token_type"], "Bearer");
    assert_eq!(basic["expires_in"], 1);
    let form = "grant_type=client_credentials&client_id=dvc-sync&client_secret=dvc-sync-secret";
    let (status, in_form) = token_request(&n, None, form).await;
    assert_eq!(status, 200, "{in_form}");
    assert_ne!(basic["access_token"], in_form["access_token"]);
    // Wrong credentials, another grant type.
    let (status, wrong) =
        token_request(&n, Some(("dvc-sync", "guess")), "grant_type=client_credentials").await;
    assert_eq!((status, wrong), (401, json!({"error": "invalid_client"})));
    assert_eq!(token_request(&n, Some(CLIENT), "grant_type=password").await.0, 400);
    // Integration: no token, a made-up one, a valid one (no session in the body), then expired.
    let token = basic["access_token"].as_str().unwrap();
    assert_eq!(integrate(&n, None, "TraCuuHoSo", json!({"mahoso": code(1)})).await.0, 401);
    assert_eq!(integrate(&n, Some("forged"), "TraCuuHoSo", json!({"mahoso": code(1)})).await.0, 401);
    let (status, created) = integrate(
        &n,
        Some(token),
        "DongBoHoSoMC",
        json!({"isUpdating": "False", "data": [dossier(&code(1))]}),
    )
    .await;
    assert_eq!((status, code_of(&created)), (200, 0), "{created}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, expired) = integrate(&n, Some(token), "TraCuuHoSo", json!({"mahoso": code(1)})).await;
    assert_eq!((status, expired), (401, json!({"error": "invalid_token"})));
    // /auth is not served behind the gateway.
    assert_eq!(n.http.post(n.url("/auth")).json(&json!({})).send().await.unwrap().status(), 404);
    // The token endpoint's faults: down, refusing every client, slow.
    n.put_faults(json!({"token_outage": true})).await;
    assert_eq!(token_request(&n, Some(CLIENT), "grant_type=client_credentials").await.0, 503);
    n.put_faults(json!({"token_outage": false, "token_reject": true})).await;
    assert_eq!(token_request(&n, Some(CLIENT), "grant_type=client_credentials").await.0, 401);
    n.put_faults(json!({"token_reject": false, "token_latency_ms": 300})).await;
    let started = std::time::Instant::now();
    assert_eq!(token_request(&n, Some(CLIENT), "grant_type=client_credentials").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

fn gateway_config(
    dir: &std::path::Path,
    provincial: &str,
    national: &str,
    secret_file: &std::path::Path,
) -> std::path::PathBuf {
    let token_url = format!("\"{national}/token\"");
    let secret = format!("{:?}", secret_file.display().to_string());
    write_config(
        dir,
        provincial,
        national,
        &[
            "national.auth = \"oauth2\"",
            &format!("national.token_url = {token_url}"),
            "national.client_id = \"dvc-sync\"",
            &format!("national.client_secret_file = {secret}"),
            // Not used behind a gateway, and not required.
            "national.username = \"\"",
            "national.password = \"\"",
        ],
    )
}

/// The daemon behind the gateway: the token endpoint is down when the province's backlog is
/// there, then refuses the client, then comes back; tokens live two seconds (renewed ahead, or
/// on a 401), and the portal errs and drops answers. Every valid dossier ends
/// up equal on both sides, nothing twice or out of order, and the secret is in no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_oauth2_gateway_the_daemon_keeps_the_promise() {
    let national = National::start_gateway(Faults {
        session_ttl_seconds: 2.0,
        error_rate: 0.05,
        drop_after_apply_rate: 0.05,
        seed: 21,
        token_outage: true,
        ..Faults::default()
    })
    .await;
    let provincial =
        Provincial::start(Knobs { dossiers: 400, changes_per_second: 0.0, seed: 21, ..Knobs::default() })
            .await;
    let dir = test_dir();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "dvc-sync-secret\n").unwrap();
    std::fs::set_permissions(&secret_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = gateway_config(dir.path(), &provincial.server.url(), &national.server.url(), &secret_file);
    let mut daemon = Daemon::start(&config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let status = status_json(&config);
        if status["push"]["last_error"].as_str().unwrap_or("").contains("token endpoint") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "no push attempt noted: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(waiting["dossiers"]["in_sync"], 0, "nothing can be pushed without a token: {waiting}");
    national.put_faults(json!({"token_outage": false, "token_reject": true})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    national.put_faults(json!({"token_reject": false})).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(90)).await;
    assert!(verdict.clean(), "{}", verdict.summary());
    assert!(verdict.not_synchronized.is_empty(), "not synchronized: {:?}", verdict.not_synchronized);
    // The audit's look-ups go on: a token outlives none of these three seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = national.stats().await;
    assert_eq!(stats["duplicate_history_entries"], 0, "{stats}");
    assert_eq!(stats["out_of_order_history_entries"], 0, "{stats}");
    assert!(stats["sessions_issued"].as_u64().unwrap() >= 2, "tokens were renewed: {stats}");
    assert!(stats["http_faults"]["token_outage_503"].as_u64().unwrap_or(0) > 0, "{stats}");
    let status = status_json(&config);
    assert!(status["push"]["session_renewals"].as_u64().unwrap() >= 1, "{status}");
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(15)).await.expect("the daemon stops");
    let logs = daemon.logs();
    assert!(logs.contains("token endpoint"), "the token endpoint's trouble is logged");
    assert!(!logs.contains("dvc-sync-secret"), "the client secret appears in a log line");
    let (_, check) = {
        let out = std::process::Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(
        check.contains("national.auth = \"oauth2\"")
            && check.contains("national.client_secret = \"<redacted>\""),
        "{check}"
    );
    assert!(!check.contains("dvc-sync-secret"), "{check}");
}
