//! `dvc-sync demo --merger`: a merged province on loopback (docs/merged-province.md). Two
//! provincial systems, the old one's (Tiền Giang, H58 codes) and the new one's (Đồng Tháp,
//! H20, which supersedes it), one national account (H20, H58 among its predecessors) with
//! errors, lost acknowledgements and short sessions, and the daemon's engine reading both.
//! Midway the cutover: the old system stops and its in-flight dossiers move to the new one
//! (their history copied with the whitespace changed, a new processing unit); the new system
//! goes on with each; the old one records a late step in one that moved. At the end, the
//! verdict per source, checked against the mocks' own views.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, Purpose},
    daemon,
    mock::{
        MockServer,
        national::{self, Faults, NationalConfig},
        provincial::{self, Knobs, ProvincialConfig, TruthItem, cutover},
    },
    store::lock::DaemonLock,
    verify,
};

const OLD: (&str, &str) = ("tiengiang", "000.00.00.H58");
const NEW: (&str, &str) = ("dongthap", "000.00.00.H20");

/// One source's figures at the end.
#[derive(Debug, Clone, Serialize)]
pub struct SourceFigures {
    pub name: String,
    pub unit: String,
    /// Dossiers it owns in the daemon's database.
    pub dossiers: u64,
    /// Its valid dossiers (owned), and those current nationally.
    pub valid: usize,
    pub synchronized: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergerReport {
    pub sources: Vec<SourceFigures>,
    /// Dossiers moved from the old system to the new one at the cutover.
    pub moved: usize,
    /// Versions of the old copies read after the move, ignored.
    pub ignored: u64,
    pub quarantined: u64,
    pub duplicate_history_entries: u64,
    pub out_of_order_history_entries: u64,
    pub status_regressions: usize,
    pub seconds: f64,
    pub kept_the_promise: bool,
}

async fn system(dossiers: u32, seed: u64, unit: &str) -> anyhow::Result<MockServer> {
    let knobs = Knobs {
        dossiers,
        changes_per_second: f64::from(dossiers.max(1)) * 0.7,
        seed,
        bad_record_rate: 0.02,
        messy_rate: 0.10,
        unknown_procedure_rate: 0.01,
        madonvi: unit.into(),
        ..Knobs::default()
    };
    provincial::start(
        TcpListener::bind("127.0.0.1:0").await?,
        ProvincialConfig { knobs, ..Default::default() },
    )
    .await
}

async fn get(http: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    Ok(http.get(url).send().await?.error_for_status()?.json().await?)
}

async fn post(http: &reqwest::Client, url: String, body: &Value) -> anyhow::Result<()> {
    http.post(url).json(body).send().await?.error_for_status()?;
    Ok(())
}

async fn truth(http: &reqwest::Client, mock: &MockServer) -> anyhow::Result<Vec<TruthItem>> {
    verify::provincial_truth(http, &mock.url()).await
}

/// Runs the merged province to its verdict; true when the promise was kept.
pub async fn run(dossiers: u32, seed: u64, json_out: bool) -> anyhow::Result<bool> {
    let started = Instant::now();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let faults = Faults {
        seed,
        error_rate: 0.03,
        drop_after_apply_rate: 0.02,
        session_ttl_seconds: 3.0,
        ..Faults::default()
    };
    let national_config = NationalConfig {
        madonvi: NEW.1.into(),
        predecessors: vec![OLD.1.into()],
        faults,
        ..NationalConfig::default()
    };
    let national = national::start(TcpListener::bind("127.0.0.1:0").await?, national_config.clone()).await?;
    let old = system(dossiers / 2, seed, OLD.1).await?;
    let new = system(dossiers - dossiers / 2, seed ^ 0x4e20, NEW.1).await?;
    let dir = tempfile::Builder::new().prefix("dvc-sync-demo-merger-").tempdir()?;
    let mut values: HashMap<String, String> = [
        ("STORE__PATH".to_owned(), dir.path().join("demo.db").display().to_string()),
        ("NATIONAL__BASE_URL".to_owned(), national.url()),
        ("NATIONAL__USERNAME".to_owned(), national_config.username.clone()),
        ("NATIONAL__PASSWORD".to_owned(), national_config.password.clone()),
        ("NATIONAL__MADONVI".to_owned(), NEW.1.to_owned()),
        ("NATIONAL__PREDECESSORS".to_owned(), OLD.1.to_owned()),
        ("NATIONAL__RETRY_INITIAL_SECONDS".to_owned(), "0.2".into()),
        ("NATIONAL__RETRY_MAX_SECONDS".to_owned(), "3.0".into()),
        ("TELEMETRY__METRICS_LISTEN".to_owned(), String::new()),
        ("DAEMON__HEARTBEAT_SECONDS".to_owned(), "1.0".into()),
    ]
    .into_iter()
    .collect();
    for ((name, _), mock) in [(OLD, &old), (NEW, &new)] {
        let key = |k: &str| format!("SOURCES__{}__{k}", name.to_ascii_uppercase());
        values.insert(key("KIND"), "http".into());
        values.insert(key("BASE_URL"), mock.url());
        values.insert(key("API_KEY"), ProvincialConfig::default().api_key);
        values.insert(key("POLL_INTERVAL_SECONDS"), "0.5".into());
        values.insert(key("LOOK_BACK_SECONDS"), "2.0".into());
    }
    values.insert(format!("SOURCES__{}__SUPERSEDES", NEW.0.to_ascii_uppercase()), OLD.0.into());
    let values = values.into_iter().map(|(k, v)| (format!("DVC_SYNC__{k}"), v)).collect();
    let config = config::from_values(values, Purpose::Run).map_err(anyhow::Error::new)?;
    let _lock = DaemonLock::acquire(&config.store.path)?;
    let engine = daemon::build_engine(&config)?;
    let token = CancellationToken::new();
    let running = {
        let (engine, token) = (engine.clone(), token.clone());
        tokio::spawn(async move { engine.run(token).await })
    };
    let say = |line: String| {
        if !json_out {
            eprintln!("{line}");
        }
    };
    say(format!(
        "dvc-sync demo --merger: {} dossiers in the old system ({}), {} in the new one ({}); national account {} with {} among its predecessors",
        dossiers / 2,
        OLD.1,
        dossiers - dossiers / 2,
        NEW.1,
        NEW.1,
        OLD.1
    ));

    // The cutover, a few seconds in.
    tokio::time::sleep(Duration::from_secs(4)).await;
    post(&http, format!("{}/_mock/pause", old.url()), &Value::Null).await?;
    let mut moved = BTreeSet::new();
    for t in truth(&http, &old).await? {
        let status = t.record.get("TrangThai").and_then(Value::as_str).unwrap_or("");
        if t.defect.is_none() && !t.unknown_procedure && !matches!(status, "denied" | "cancelled" | "done") {
            post(&http, format!("{}/_mock/dossiers", new.url()), &cutover::migrated(&t.record)).await?;
            moved.insert(t.key);
        }
    }
    say(format!("cutover: the old system stopped; {} in-flight dossiers moved to the new one", moved.len()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for t in truth(&http, &new).await?.iter().filter(|t| moved.contains(&t.key)) {
        let next = cutover::with_step(&t.record, "Đã chuyển xử lý tại hệ thống mới");
        post(&http, format!("{}/_mock/dossiers", new.url()), &next).await?;
    }
    if let Some(late) = truth(&http, &old).await?.into_iter().find(|t| moved.contains(&t.key)) {
        post(
            &http,
            format!("{}/_mock/dossiers", old.url()),
            &cutover::with_step(&late.record, "Bước làm muộn"),
        )
        .await?;
        say(format!("the old system recorded a late step in {} (it moved: ignored)", late.key));
    }

    // Until every valid dossier is current nationally as its owner holds it.
    let map = config.status_map.clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    let verdict = loop {
        let (mut owned, moved_truth): (Vec<TruthItem>, Vec<TruthItem>) =
            truth(&http, &new).await?.into_iter().partition(|t| !moved.contains(&t.key));
        let old_truth = truth(&http, &old).await?;
        let old_owned: Vec<TruthItem> = old_truth.into_iter().filter(|t| !moved.contains(&t.key)).collect();
        let state = verify::national_state(&http, &national.url()).await?;
        let stats = get(&http, format!("{}/_mock/stats", national.url())).await?;
        let per_old = verify::compare_with(&old_owned, &state, &stats, &map, false);
        let per_new = verify::compare_merged(&owned, &moved_truth, &state, &stats, &map, false);
        owned.extend(old_owned);
        let all = verify::compare_merged(&owned, &moved_truth, &state, &stats, &map, false);
        let idle = engine
            .store()
            .read(crate::store::state::dossier_counts)
            .is_ok_and(|d| d.pending + d.retrying == 0);
        if (all.not_synchronized.is_empty() && idle) || Instant::now() > deadline {
            break (all, per_old, per_new);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    token.cancel();
    let _ = running.await;
    let (all, per_old, per_new) = verdict;
    let owned: BTreeMap<String, u64> = engine.store().read(|c| {
        c.prepare("SELECT source, COUNT(*) FROM dossier GROUP BY source")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
            .collect()
    })?;
    let (ignored, quarantined) = engine.store().read(|c| {
        let ignored = crate::store::meta_get(c, crate::sync::poll::record::IGNORED)?;
        Ok((ignored.and_then(|v| v.parse().ok()).unwrap_or(0), crate::store::state::count(c, "quarantine")?))
    })?;
    let figures = |(name, unit): (&str, &str), v: &verify::Verdict| SourceFigures {
        name: name.into(),
        unit: unit.into(),
        dossiers: owned.get(name).copied().unwrap_or(0),
        valid: v.valid,
        synchronized: v.synchronized,
    };
    let report = MergerReport {
        sources: vec![figures(OLD, &per_old), figures(NEW, &per_new)],
        moved: moved.len(),
        ignored,
        quarantined,
        duplicate_history_entries: all.duplicate_history_entries,
        out_of_order_history_entries: all.out_of_order_history_entries,
        status_regressions: all.status_regressions.len(),
        seconds: started.elapsed().as_secs_f64(),
        kept_the_promise: all.clean() && all.synchronized == all.valid && !moved.is_empty() && ignored > 0,
    };
    national.stop().await;
    old.stop().await;
    new.stop().await;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report).context("the report")?);
    } else {
        print!("{}", render(&report, crate::i18n::current()));
    }
    Ok(report.kept_the_promise)
}

fn render(r: &MergerReport, lang: crate::i18n::Lang) -> String {
    use crate::tr;
    let mut out = String::new();
    for s in &r.sources {
        out.push_str(&format!(
            "{}\n",
            tr!(
                lang,
                "merger-source",
                name = s.name.as_str(),
                unit = s.unit.as_str(),
                dossiers = s.dossiers,
                synchronized = s.synchronized,
                valid = s.valid
            )
        ));
    }
    out.push_str(&format!(
        "{}\n",
        tr!(
            lang,
            "merger-summary",
            moved = r.moved,
            ignored = r.ignored,
            quarantined = r.quarantined,
            duplicates = r.duplicate_history_entries,
            out_of_order = r.out_of_order_history_entries,
            regressions = r.status_regressions,
            seconds = lang.num(r.seconds, 0)
        )
    ));
    out.push_str(&format!(
        "{}\n",
        lang.t(if r.kept_the_promise { "merger-kept" } else { "merger-not-kept" })
    ));
    out
}
