//! Citizens' personal data stays in the database: nothing the daemon shows or says elsewhere
//! (its logs at debug level, /metrics, `status` and `--json`, `status --dossier` with the call
//! journal, `report`, `check-source`) carries a name, an ID number, a phone or an e-mail of the
//! provincial truth, whatever happened to the dossier (synchronized, parked, quarantined).

mod common;

use std::time::Duration;

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_value_reaches_logs_metrics_status_the_journal_or_the_report() {
    let national = National::start(Faults {
        error_rate: 0.05,
        drop_after_apply_rate: 0.05,
        seed: 7,
        ..Faults::default()
    })
    .await;
    let provincial = Provincial::start(Knobs {
        dossiers: 300,
        changes_per_second: 60.0,
        bad_record_rate: 0.10,
        messy_rate: 0.30,
        unknown_procedure_rate: 0.05,
        seed: 11,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["telemetry.metrics_listen = \"127.0.0.1:0\""],
    );
    let mut daemon = Daemon::start_with_env(&config, &[("RUST_LOG", "debug")]).await;
    let addr = metrics_addr(&daemon).await;
    // To the end of the province's filing, everything synchronized.
    let verdict = loop {
        let v = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(120)).await;
        if provincial.stats().await["finished"] == serde_json::json!(true) && v.not_synchronized.is_empty() {
            break v;
        }
    };
    assert!(verdict.clean(), "{}", verdict.summary());
    assert!(
        !verdict.injected_unknown_procedures.is_empty()
            && verdict.injected_defects.values().sum::<usize>() > 0
    );

    let truth = provincial.truth().await;
    let personal = personal_values(&truth);
    assert!(personal.len() > 300, "the truth has its people: {}", personal.len());

    let mut said = vec![
        (
            "/metrics".to_owned(),
            reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap(),
        ),
        ("status".into(), cli(&config, &["status"]).1),
        ("status --json".into(), cli(&config, &["status", "--json"]).1),
        ("report".into(), cli(&config, &["report", "--late"]).1),
        ("report --json".into(), cli(&config, &["report", "--json"]).1),
        ("check-source".into(), cli(&config, &["check-source", "--limit", "50"]).1),
    ];
    // Every dossier's own page: the parked ones, and every tenth of the rest.
    let parked = verdict.injected_unknown_procedures.iter().cloned();
    let some: Vec<String> = truth
        .iter()
        .filter_map(|i| i["record"]["MaHoSo"].as_str().map(str::to_owned))
        .step_by(10)
        .chain(parked)
        .collect();
    assert!(some.len() > 30);
    for mahoso in &some {
        said.push((
            format!("status --dossier {mahoso}"),
            cli(&config, &["status", "--dossier", mahoso, "--json"]).1,
        ));
        said.push((
            format!("status --dossier {mahoso} (table)"),
            cli(&config, &["status", "--dossier", mahoso]).1,
        ));
    }
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());
    let logs = daemon.logs();
    assert!(logs.lines().count() > 50, "debug logs were written: {}", logs.lines().count());
    said.push(("the daemon's logs".into(), logs));

    // The scan finds what is there: the same listing with personal data shown carries some.
    let shown = cli(&config, &["check-source", "--limit", "50", "--show-personal"]).1;
    assert!(personal.iter().any(|p| shown.contains(p.as_str())), "the scan sees nothing: {shown}");
    for (what, text) in &said {
        assert!(!text.trim().is_empty(), "{what} said nothing");
        let leaked: Vec<&String> = personal.iter().filter(|p| text.contains(p.as_str())).collect();
        assert!(leaked.is_empty(), "{what} carries personal values {leaked:?}");
    }
}
