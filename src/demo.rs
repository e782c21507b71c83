//! `dvc-sync demo`: the whole system in one process on loopback. Both mocks and the daemon's
//! engine run here; the province files a few thousand dossiers with messy and bad records
//! while the national portal suffers errors, 429 bursts, an outage, expiring sessions and lost
//! acknowledgements. At the end a report, checked against both mocks' own views, says whether
//! the promise was kept.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, Purpose},
    daemon::{self, DaemonEngine},
    domain::normalize::StatusMap,
    i18n::Lang,
    mock::{
        MockServer,
        national::{self, Faults, NationalConfig},
        provincial::{self, Knobs, ProvincialConfig},
    },
    status,
    store::lock::DaemonLock,
    tr,
    verify::{self, Verdict},
};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dossiers: u32,
    /// Keep the database here instead of a temporary directory.
    pub db: Option<PathBuf>,
    pub seed: u64,
    /// Give up (and report what was reached) after this long.
    pub timeout: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { dossiers: 3_000, db: None, seed: 1, timeout: Duration::from_secs(300), progress: true }
    }
}

/// What the demo found, every figure checked against the mocks' `/_mock/` views.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub dossiers: usize,
    pub valid_dossiers: usize,
    pub changes: u64,
    pub history_entries: HistoryFigures,
    /// Valid dossiers whose national copy equals the provincial record, in percent.
    pub coverage_percent: f64,
    /// The daemon's own figure (`dvc-sync status`).
    pub daemon_coverage_percent: f64,
    pub quarantined: Parked,
    pub refused: Parked,
    pub retries: u64,
    pub read_backs: u64,
    pub faults_absorbed: FaultFigures,
    pub lag_seconds: Lag,
    pub throughput: Throughput,
    pub duration_seconds: f64,
    pub verdict: VerdictFigures,
    pub indicators: Indicators,
}

/// The Quyết định 766 figures of the run, as `dvc-sync report` computes them from the
/// daemon's database and as the national mock computes them from what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct Indicators {
    pub from: String,
    pub to: String,
    pub local: Value,
    pub national: Value,
    /// Every figure equal but 1.4's denominator (the national side knows only what it holds).
    pub agree: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryFigures {
    /// Entries of valid dossiers at the provincial portal.
    pub provincial: usize,
    /// Entries the national portal holds for them.
    pub national: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Parked {
    pub total: usize,
    pub by_reason: BTreeMap<String, usize>,
    /// Exactly what the simulator injected (by kind and count).
    pub as_injected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultFigures {
    pub total: u64,
    /// National transport faults injected, by kind (HTTP 500, 429, 503, dropped answers).
    pub national: BTreeMap<String, u64>,
    /// Sessions that expired and were renewed.
    pub sessions_renewed: u64,
    /// Provincial pages that failed (HTTP errors, malformed bodies).
    pub provincial_pages: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub dossiers_per_second: f64,
    pub national_items_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerdictFigures {
    pub lost: usize,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub clean: bool,
}

impl DemoReport {
    /// Clean, and every valid dossier synchronized: the demo's exit 0.
    pub fn kept_the_promise(&self) -> bool {
        self.verdict.clean && self.coverage_percent >= 100.0
    }
}

/// The running system.
pub struct Demo {
    pub national: MockServer,
    pub provincial: MockServer,
    engine: DaemonEngine,
    token: CancellationToken,
    engine_task: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
    _lock: DaemonLock,
    http: reqwest::Client,
    map: StatusMap,
    started: Instant,
    dossiers: u32,
}

/// Groups reasons by kind: the text up to its first detail.
fn reason_kind(reason: &str) -> String {
    for kind in [
        "no MaHoSo",
        "malformed MaHoSo",
        "unparseable date",
        "not in status_map",
        "history rewritten",
        "not in the national catalogue",
    ] {
        if reason.contains(kind) {
            return kind.to_owned();
        }
    }
    if let Some(code) = reason.split("error_code ").nth(1).and_then(|r| r.split(')').next()) {
        return format!("national error_code {code}");
    }
    reason.chars().take(48).collect()
}

/// The defect the simulator names, as the daemon's reason kind.
fn defect_kind(defect: &str) -> &'static str {
    match defect {
        "no MaHoSo" => "no MaHoSo",
        "unparseable date" => "unparseable date",
        "local status not in the table" => "not in status_map",
        _ => "malformed MaHoSo",
    }
}

impl Demo {
    pub async fn start(opts: &DemoOptions) -> anyhow::Result<Demo> {
        let national = national::start(
            TcpListener::bind("127.0.0.1:0").await?,
            NationalConfig {
                faults: Faults { seed: opts.seed, ..Faults::default() },
                ..NationalConfig::default()
            },
        )
        .await?;
        let knobs = Knobs {
            dossiers: opts.dossiers,
            // About ten seconds of a busy province's life, accelerated.
            changes_per_second: f64::from(opts.dossiers.max(1)) * 0.7,
            seed: opts.seed,
            bad_record_rate: 0.02,
            messy_rate: 0.10,
            unknown_procedure_rate: 0.01,
            late_visibility_ms: 400,
            ..Knobs::default()
        };
        let provincial = provincial::start(
            TcpListener::bind("127.0.0.1:0").await?,
            ProvincialConfig { knobs, ..ProvincialConfig::default() },
        )
        .await?;
        let (tmp, db) = match &opts.db {
            // The demo's verdict compares the database with the mocks it starts: a database of
            // another run (or the daemon's own) would never agree, and must not be written to.
            Some(path) if path.exists() => anyhow::bail!(
                "demo --db wants a new file, and {} exists: give another path (the demo fills a database of its own)",
                path.display()
            ),
            Some(path) => (None, path.clone()),
            None => {
                let dir = tempfile::Builder::new().prefix("dvc-sync-demo-").tempdir()?;
                let db = dir.path().join("demo.db");
                (Some(dir), db)
            }
        };
        let values: HashMap<String, String> = [
            ("STORE__PATH", db.display().to_string()),
            ("PROVINCIAL__BASE_URL", provincial.url()),
            ("PROVINCIAL__API_KEY", ProvincialConfig::default().api_key),
            ("PROVINCIAL__POLL_INTERVAL_SECONDS", "0.5".into()),
            ("PROVINCIAL__LOOK_BACK_SECONDS", "2.0".into()),
            ("PROVINCIAL__RETRY_INITIAL_SECONDS", "0.1".into()),
            ("PROVINCIAL__RETRY_MAX_SECONDS", "2.0".into()),
            ("NATIONAL__BASE_URL", national.url()),
            ("NATIONAL__USERNAME", NationalConfig::default().username),
            ("NATIONAL__PASSWORD", NationalConfig::default().password),
            ("NATIONAL__MADONVI", NationalConfig::default().madonvi),
            ("NATIONAL__RETRY_INITIAL_SECONDS", "0.2".into()),
            ("NATIONAL__RETRY_MAX_SECONDS", "3.0".into()),
            ("NATIONAL__REQUEST_TIMEOUT_SECONDS", "10.0".into()),
            ("TELEMETRY__METRICS_LISTEN", String::new()),
            ("DAEMON__DRAIN_SECONDS", "5.0".into()),
            ("DAEMON__HEARTBEAT_SECONDS", "1.0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("DVC_SYNC__{k}"), v))
        .collect();
        let config = config::from_values(values, Purpose::Run).map_err(anyhow::Error::new)?;
        let lock = DaemonLock::acquire(&config.store.path)?;
        let engine = daemon::build_engine(&config)?;
        let token = CancellationToken::new();
        let engine_task = {
            let engine = engine.clone();
            let token = token.clone();
            tokio::spawn(async move { engine.run(token).await })
        };
        Ok(Demo {
            national,
            provincial,
            engine,
            token,
            engine_task: Some(engine_task),
            _tmp: tmp,
            _lock: lock,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
            map: config.status_map.clone(),
            started: Instant::now(),
            dossiers: opts.dossiers,
        })
    }

    async fn put(&self, base: &str, patch: Value) -> anyhow::Result<()> {
        self.http.put(format!("{base}/_mock/faults")).json(&patch).send().await?.error_for_status()?;
        Ok(())
    }

    async fn get(&self, url: String) -> anyhow::Result<Value> {
        Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
    }

    /// The fault schedule, by seconds since the start.
    async fn apply_schedule(&self, second: u64, applied: &mut u64) -> anyhow::Result<()> {
        let national = self.national.url();
        while *applied <= second {
            let patch = match *applied {
                0 => Some(
                    json!({"error_rate": 0.03, "drop_after_apply_rate": 0.02, "session_ttl_seconds": 3.0}),
                ),
                3 | 13 => Some(json!({"rate_limit_per_second": 15.0})),
                5 | 15 => Some(json!({"rate_limit_per_second": 0.0})),
                8 => Some(json!({"outage": true})),
                10 => Some(json!({"outage": false})),
                _ => None,
            };
            if let Some(patch) = patch {
                self.put(&national, patch).await?;
            }
            if *applied == 0 {
                self.put(&self.provincial.url(), json!({"error_rate": 0.02, "malformed_rate": 0.01})).await?;
            }
            *applied += 1;
        }
        Ok(())
    }

    /// Runs until every valid dossier is synchronized and nothing is left to settle (or the
    /// timeout), then stops the engine and reports.
    pub async fn run_to_end(&mut self, opts: &DemoOptions) -> anyhow::Result<DemoReport> {
        let bar = if opts.progress {
            indicatif::ProgressBar::new(u64::from(self.dossiers))
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed:>3} [{bar:32}] {pos}/{len} synchronized · {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let mut applied = 0;
        let mut settled_since: Option<Instant> = None;
        loop {
            let elapsed = self.started.elapsed();
            self.apply_schedule(elapsed.as_secs(), &mut applied).await?;
            let counts = self.engine.store().read(status::dossier_counts)?;
            let stats = self.engine.stats();
            let faults: u64 = stats.faults.values().sum::<u64>() + stats.page_failures;
            bar.set_position(counts.in_sync);
            bar.set_message(format!(
                "outbox {} · parked {} · retries {} · faults absorbed {}",
                counts.pending + counts.retrying,
                counts.dead + counts.quarantined,
                stats.retries,
                faults
            ));
            let finished =
                self.get(format!("{}/_mock/stats", self.provincial.url())).await?["finished"] == json!(true);
            // Done when the province is quiet, the faults are over, the outbox is empty, and
            // that holds for a few seconds (late changes may still appear).
            let quiet = finished && applied > 16 && counts.pending + counts.retrying == 0;
            settled_since = if quiet { settled_since.or(Some(Instant::now())) } else { None };
            if settled_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(3)) {
                let verdict =
                    verify::verify(&self.http, &self.provincial.url(), &self.national.url(), &self.map)
                        .await?;
                if verdict.not_synchronized.is_empty() {
                    break;
                }
                settled_since = None;
            }
            if elapsed > opts.timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bar.finish_and_clear();
        let duration = self.started.elapsed();
        self.token.cancel();
        if let Some(task) = self.engine_task.take() {
            let _ = task.await;
        }
        self.report(duration).await
    }

    async fn report(&self, duration: Duration) -> anyhow::Result<DemoReport> {
        let verdict: Verdict =
            verify::verify(&self.http, &self.provincial.url(), &self.national.url(), &self.map).await?;
        let truth = verify::provincial_truth(&self.http, &self.provincial.url()).await?;
        let national = self.get(format!("{}/_mock/stats", self.national.url())).await?;
        let provincial = self.get(format!("{}/_mock/stats", self.provincial.url())).await?;
        let store = self.engine.store();
        let (quarantine, dead, counts) = store.read(|c| {
            let rows = |sql: &str| -> rusqlite::Result<Vec<String>> {
                let mut stmt = c.prepare(sql)?;
                stmt.query_map([], |r| r.get(0))?.collect()
            };
            Ok((
                rows("SELECT reason FROM quarantine")?,
                rows("SELECT reason FROM dead")?,
                status::dossier_counts(c)?,
            ))
        })?;
        let group = |reasons: &[String]| {
            let mut by: BTreeMap<String, usize> = BTreeMap::new();
            for r in reasons {
                *by.entry(reason_kind(r)).or_default() += 1;
            }
            by
        };
        let quarantined_by = group(&quarantine);
        let mut injected: BTreeMap<String, usize> = BTreeMap::new();
        for t in truth.iter().filter_map(|t| t.defect.as_deref()) {
            *injected.entry(defect_kind(t).to_owned()).or_default() += 1;
        }
        let dead_total = dead.len();
        let stats = self.engine.stats();
        let mut national_faults: BTreeMap<String, u64> = BTreeMap::new();
        if let Some(map) = national["http_faults"].as_object() {
            for (k, v) in map {
                national_faults.insert(k.clone(), v.as_u64().unwrap_or(0));
            }
        }
        let sessions_renewed = national["sessions_issued"].as_u64().unwrap_or(1).saturating_sub(1);
        let provincial_pages = provincial["error_pages"].as_u64().unwrap_or(0)
            + provincial["malformed_pages"].as_u64().unwrap_or(0);
        let items = &national["items_applied"];
        let national_items = items["dossiers_created"].as_u64().unwrap_or(0)
            + items["dossiers_updated"].as_u64().unwrap_or(0)
            + items["history_entries"].as_u64().unwrap_or(0);
        let seconds = duration.as_secs_f64().max(1e-9);
        let indicators = self.indicators(&truth).await?;
        Ok(DemoReport {
            indicators,
            dossiers: verdict.dossiers,
            valid_dossiers: verdict.valid,
            changes: provincial["changes"].as_u64().unwrap_or(0),
            history_entries: HistoryFigures {
                provincial: verdict.history_entries,
                national: verdict.national_history_entries,
            },
            coverage_percent: verdict.coverage_percent,
            daemon_coverage_percent: status::coverage(&counts),
            quarantined: Parked {
                total: quarantine.len(),
                as_injected: quarantined_by == injected,
                by_reason: quarantined_by,
            },
            refused: Parked {
                total: dead_total,
                as_injected: dead_total == verdict.injected_unknown_procedures.len(),
                by_reason: group(&dead),
            },
            retries: stats.retries,
            read_backs: stats.readbacks,
            faults_absorbed: FaultFigures {
                total: national_faults.values().sum::<u64>() + sessions_renewed + provincial_pages,
                national: national_faults,
                sessions_renewed,
                provincial_pages,
            },
            lag_seconds: Lag { p50: stats.lag_p50_seconds, p99: stats.lag_p99_seconds },
            throughput: Throughput {
                dossiers_per_second: verdict.synchronized as f64 / seconds,
                national_items_per_second: national_items as f64 / seconds,
            },
            duration_seconds: seconds,
            verdict: VerdictFigures {
                lost: verdict.not_synchronized.len(),
                duplicated: verdict.duplicate_history_entries,
                out_of_order: verdict.out_of_order_history_entries + verdict.status_regressions.len() as u64,
                clean: verdict.clean(),
            },
        })
    }

    /// The 766 figures from the first day a dossier was received to today, both ways.
    async fn indicators(&self, truth: &[crate::mock::provincial::TruthItem]) -> anyhow::Result<Indicators> {
        let today = crate::domain::dates::to_vn_local(jiff::Timestamp::now()).date();
        let first = truth
            .iter()
            .filter_map(|t| crate::domain::dates::parse_national(t.record.get("NgayTiepNhan")?.as_str()?))
            .map(|d| d.date())
            .min()
            .unwrap_or(today)
            .min(today);
        let period = crate::report::Period::new(first, today).map_err(anyhow::Error::msg)?;
        let local = self.engine.store().read(|c| {
            let ctx = crate::report::lateness::Context::now(Default::default());
            crate::report::from_database(c, &period, false, &ctx)
        })?;
        let local = serde_json::to_value(&local.province)?;
        let national = self
            .get(format!("{}/_mock/report?from={first}&to={today}", self.national.url()))
            .await?["province"]
            .clone();
        let agree = crate::report::INDICATORS.iter().all(|(id, _)| {
            let (l, n) = (&local[id], &national[id]);
            if *id == "1.4" { l["numerator"] == n["numerator"] } else { l == n }
        });
        Ok(Indicators { from: first.to_string(), to: today.to_string(), local, national, agree })
    }

    /// Stops the mocks (the engine is stopped by [`Demo::run_to_end`]).
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.engine_task.take() {
            let _ = task.await;
        }
        self.national.stop().await;
        self.provincial.stop().await;
    }
}

/// The report for people.
pub fn render(r: &DemoReport, lang: Lang) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let mut line = |label: &str, text: String| {
        let _ = writeln!(o, "{}", crate::i18n::wrap(&format!("  {:<18}", lang.t(label)), &text));
    };
    let yes = |b: bool| lang.t(if b { "demo-as-injected" } else { "demo-not-as-injected" });
    line(
        "demo-label-dossiers",
        tr!(lang, "demo-dossiers", filed = r.dossiers, valid = r.valid_dossiers, changes = r.changes),
    );
    line(
        "demo-label-history",
        tr!(
            lang,
            "demo-history",
            provincial = r.history_entries.provincial,
            national = r.history_entries.national
        ),
    );
    line(
        "demo-label-coverage",
        tr!(
            lang,
            "demo-coverage",
            percent = lang.num(r.coverage_percent, 2),
            daemon = lang.num(r.daemon_coverage_percent, 2)
        ),
    );
    for (label, parked) in [("demo-label-quarantined", &r.quarantined), ("demo-label-refused", &r.refused)] {
        line(label, format!("{} ({})", parked.total, yes(parked.as_injected)));
        for (k, n) in &parked.by_reason {
            line("label-blank", format!("  {n:>4}  {k}"));
        }
    }
    let f = &r.faults_absorbed;
    let national: Vec<String> = f.national.iter().map(|(k, v)| format!("{v} {k}")).collect();
    line(
        "demo-label-faults",
        tr!(
            lang,
            "demo-faults",
            total = f.total,
            national = national.join(", "),
            sessions = f.sessions_renewed,
            pages = f.provincial_pages
        ),
    );
    line("demo-label-retries", tr!(lang, "demo-retries", retries = r.retries, read_backs = r.read_backs));
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{} s", lang.num(s, 2)));
    line(
        "demo-label-lag",
        tr!(lang, "demo-lag", p50 = secs(r.lag_seconds.p50), p99 = secs(r.lag_seconds.p99)),
    );
    line(
        "demo-label-throughput",
        tr!(
            lang,
            "demo-throughput",
            dossiers = lang.num(r.throughput.dossiers_per_second, 0),
            items = lang.num(r.throughput.national_items_per_second, 0)
        ),
    );
    let v = &r.verdict;
    let kept = lang.t(if r.kept_the_promise() { "demo-promise-kept" } else { "demo-promise-broken" });
    line(
        "demo-label-verdict",
        tr!(
            lang,
            "demo-verdict",
            lost = v.lost,
            duplicated = v.duplicated,
            out_of_order = v.out_of_order,
            kept = kept
        ),
    );
    let i = &r.indicators;
    line("demo-label-766", tr!(lang, "demo-766", from = i.from.as_str(), to = i.to.as_str()));
    for (id, _) in crate::report::INDICATORS {
        let figure = |v: &Value| match (v["numerator"].as_u64(), v["denominator"].as_u64()) {
            (Some(n), Some(d)) if d > 0 => {
                format!("{:>8} ({n}/{d})", format!("{} %", lang.num(n as f64 * 100.0 / d as f64, 2)))
            }
            (Some(n), Some(d)) => format!("{:>8} ({n}/{d})", "-"),
            _ => "?".to_owned(),
        };
        let name = crate::report::render::indicator_name(id, lang);
        let _ = writeln!(o, "    {id} {name:<32} {:<24} {}", figure(&i.local[id]), figure(&i.national[id]));
    }
    let agree = lang.t(if i.agree { "demo-agree" } else { "demo-disagree" });
    let _ = writeln!(o, "{}", crate::i18n::wrap(&" ".repeat(20), &agree));
    format!("{}\n{o}", tr!(lang, "demo-title", seconds = lang.num(r.duration_seconds, 1)))
}

/// `dvc-sync demo`.
pub async fn run(opts: DemoOptions, json_out: bool) -> anyhow::Result<bool> {
    let mut demo = Demo::start(&opts).await.context("while starting the demo")?;
    if !json_out {
        eprintln!(
            "dvc-sync demo: {} dossiers; national portal at {}, provincial at {}; faults: errors, 429 bursts, an outage, expiring sessions, lost acknowledgements",
            opts.dossiers,
            demo.national.url(),
            demo.provincial.url()
        );
    }
    let report = demo.run_to_end(&opts).await?;
    demo.stop().await;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, crate::i18n::current()));
    }
    Ok(report.kept_the_promise())
}
