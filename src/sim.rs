//! Deterministic simulation: the real engine against the real portal logic (the provincial
//! simulator's `World` and the national mock's `NationalCore`), in memory, in virtual time
//! (tokio's paused clock), on a real SQLite file, with seeded faults and crashes. One seed
//! decides everything (the province, every fault, every crash), so a failing seed replays
//! exactly: `dvc-sync simulate --seed N`.
//!
//! Faults: page errors and late visibility at the source; at the national portal 429 with
//! Retry-After, 5xx before or after applying, timeouts before or after applying, lost answers,
//! outages, short sessions, item limits below the batch size, and refused items. Crashes: the
//! engine dropped at random moments, and right after the national portal applied a write but
//! before the engine heard back (between "acknowledged" and "acknowledgement committed"); it
//! restarts on the same database file.
//!
//! After the run, with faults off, the engine must converge, and then: every valid dossier
//! equal on both sides, no status backwards, no history entry twice or out of order, and
//! parked exactly what was injected.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Secret,
    domain::service::Service,
    domain::{normalize::StatusMap, stable_hash, status::DEFAULT_STATUS_MAP, status::NationalStatus},
    mock::{
        national::{Faults, MockAuth, NationalConfig, NationalCore},
        provincial::{Knobs, World, cutover},
    },
    national::{
        Answer, Credentials, Granted, NationalClient, Target, Transient, TransientKind, Transport, classify,
        token_answer,
    },
    status,
    store::{Durability, Store},
    sync::{
        Engine, EngineConfig, SourceSettings,
        ports::{Clock, Cursor, Page, Source, SourceError, TokioClock},
    },
    transport::RawResponse,
    verify::{self, TruthItem},
};

/// What one seed did and found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SimReport {
    pub seed: u64,
    pub ok: bool,
    pub failures: Vec<String>,
    pub dossiers: usize,
    pub valid: usize,
    pub synchronized: usize,
    pub quarantined: usize,
    pub dead: usize,
    pub crashes: u32,
    /// Dossiers whose personal data were minimised at the end, and dossiers read again from
    /// the source because the portal needed a minimised one whole.
    pub minimised: usize,
    pub reread: usize,
    /// A merged province's world: dossiers moved mid-life from the old system to the new one,
    /// and later versions of the old copies ignored.
    pub merger: bool,
    pub moved: usize,
    pub ignored: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    pub virtual_seconds: f64,
    /// A hash of the final national state and counters: equal on every replay of the seed.
    pub fingerprint: u64,
}

/// The scenario a seed draws.
#[derive(Debug, Clone)]
struct Scenario {
    knobs: Knobs,
    page_error: f64,
    rate_limited: f64,
    error_before: f64,
    error_after: f64,
    timeout_before: f64,
    timeout_after: f64,
    dropped: f64,
    crash_after_apply: f64,
    outages: Vec<(f64, f64)>,
    session_ttl: f64,
    max_items: usize,
    batch_size: usize,
    page_size: usize,
    poll_interval: f64,
    look_back: f64,
    crashes_at: Vec<f64>,
    fault_phase: f64,
    /// Share of look-up answers a "gateway" rewrites into another form (the same facts).
    readback_rewrite: f64,
    /// When (virtual seconds) the operator changes status_map: the next restart uses another.
    map_change_at: Option<f64>,
    /// When (virtual seconds) the national side loses data, and what: everything (0), one
    /// dossier (1), or the end of some finished dossiers' histories (2). The audit must find
    /// and repair it.
    national_loss: Option<(f64, u8)>,
}

impl Scenario {
    fn draw(seed: u64) -> Scenario {
        let mut r = fastrand::Rng::with_seed(seed ^ 0xd1ce_5eed);
        let late = r.u64(0..800);
        let fault_phase = 15.0 + r.f64() * 15.0;
        let mut crashes_at: Vec<f64> = (0..r.u32(0..5)).map(|_| r.f64() * fault_phase).collect();
        crashes_at.sort_by(f64::total_cmp);
        let mut outages = Vec::new();
        for _ in 0..r.u32(0..3) {
            let start = r.f64() * fault_phase;
            outages.push((start, start + 1.0 + r.f64() * 6.0));
        }
        let max_items = [3, 5, 10, 100][r.usize(0..4)];
        Scenario {
            knobs: Knobs {
                dossiers: r.u32(3..12),
                changes_per_second: 8.0 + r.f64() * 32.0,
                seed,
                bad_record_rate: r.f64() * 0.2,
                messy_rate: r.f64() * 0.4,
                unknown_procedure_rate: r.f64() * 0.12,
                late_visibility_ms: late,
                ..Knobs::default()
            },
            page_error: r.f64() * 0.15,
            rate_limited: r.f64() * 0.1,
            error_before: r.f64() * 0.08,
            error_after: r.f64() * 0.05,
            timeout_before: r.f64() * 0.03,
            timeout_after: r.f64() * 0.03,
            dropped: r.f64() * 0.08,
            crash_after_apply: r.f64() * 0.02,
            outages,
            session_ttl: 2.0 + r.f64() * 30.0,
            max_items,
            // Sometimes above the portal's limit: its code 8 must halve batches.
            batch_size: [2, 4, 10, 50][r.usize(0..4)],
            page_size: r.usize(2..40),
            poll_interval: 0.5 + r.f64() * 1.5,
            // Longer than any visibility delay: the look-back pass must find late changes.
            look_back: late as f64 / 1000.0 + 0.5 + r.f64() * 2.0,
            crashes_at,
            fault_phase,
            readback_rewrite: if r.bool() { r.f64() * 0.6 } else { 0.0 },
            map_change_at: (r.u8(0..3) == 0).then(|| r.f64() * fault_phase),
            national_loss: (r.u8(0..4) != 0).then(|| (r.f64() * fault_phase, r.u8(0..3))),
        }
    }
}

/// A merged province (one world in three): a second system (the new province's, H20 codes)
/// beside the first (the old one's, H58), which it supersedes; midway, a share of the old
/// system's in-flight dossiers move to it, as a migration copies them (the entries' whitespace
/// changed, a new processing unit, the new system's own version numbers); the new system adds a
/// step to each later, and the old one a late step that must be ignored. Drawn from its own
/// generator, so that the other worlds of a seed stay as they were.
#[derive(Debug, Clone)]
struct MergerPlan {
    knobs: Knobs,
    /// The old system's pace: slow enough that dossiers are still in flight at the move.
    old_changes_per_second: f64,
    move_at: f64,
    share: f64,
}

impl MergerPlan {
    fn draw(seed: u64, fault_phase: f64, base: &Knobs) -> Option<MergerPlan> {
        if seed % 3 != 2 {
            return None;
        }
        let mut r = fastrand::Rng::with_seed(seed ^ 0x3e76_e500);
        Some(MergerPlan {
            knobs: Knobs {
                dossiers: r.u32(2..8),
                seed: seed ^ 0x4e20,
                madonvi: NEW_UNIT.into(),
                ..base.clone()
            },
            old_changes_per_second: 2.0 + r.f64() * 4.0,
            move_at: fault_phase * (0.2 + r.f64() * 0.4),
            share: 0.3 + r.f64() * 0.7,
        })
    }
}

const OLD_UNIT: &str = "000.00.00.H58";
const NEW_UNIT: &str = "000.00.00.H20";

/// The simulated province: one system, or a merger's two.
struct Province {
    old: Arc<Mutex<World>>,
    merger: Option<Merger>,
}

struct Merger {
    new: Arc<Mutex<World>>,
    plan: MergerPlan,
    /// The dossiers moved.
    moved: BTreeSet<String>,
    /// 0 before the move, 1 moved, 2 the new system's step added, 3 the old one's late step.
    stage: u8,
}

fn lock(world: &Mutex<World>) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

impl Province {
    fn worlds(&self) -> Vec<Arc<Mutex<World>>> {
        std::iter::once(self.old.clone()).chain(self.merger.as_ref().map(|m| m.new.clone())).collect()
    }

    fn finished(&self) -> bool {
        self.worlds().iter().all(|w| lock(w).finished()) && self.merger.as_ref().is_none_or(|m| m.stage >= 3)
    }

    /// What each source holds of the dossiers it owns, and the moved dossiers as the new
    /// system holds them.
    fn truth(&self) -> (Vec<TruthItem>, Vec<TruthItem>) {
        let old = verify::truth_items(&lock(&self.old).truth());
        let Some(m) = &self.merger else { return (old, Vec::new()) };
        let new = verify::truth_items(&lock(&m.new).truth());
        let (moved, mut owned): (Vec<TruthItem>, Vec<TruthItem>) =
            new.into_iter().partition(|t| m.moved.contains(&t.key));
        owned.extend(old.into_iter().filter(|t| !m.moved.contains(&t.key)));
        (owned, moved)
    }

    /// The merger's steps, as their times come (`now`: virtual seconds).
    fn advance(&mut self, now: f64, store: &Store, map: &StatusMap, faults: &FaultSwitch) {
        let Some(m) = &mut self.merger else { return };
        let at = m.plan.move_at;
        match m.stage {
            0 if now >= at => {
                let truth = verify::truth_items(&lock(&self.old).truth());
                let mut chooser = fastrand::Rng::with_seed(m.plan.knobs.seed);
                for t in truth {
                    let open = t.record.get("TrangThai").and_then(Value::as_str).and_then(|s| map.get(s));
                    let movable = t.defect.is_none()
                        && !t.unknown_procedure
                        && open.is_some_and(|s| !matches!(s.code(), 3 | 7 | 10));
                    if movable && chooser.f64() < m.plan.share {
                        // The cutover: the old system stops working on it, the new one has it.
                        lock(&self.old).upsert_raw(t.record.clone(), 0);
                        lock(&m.new).upsert_raw(cutover::migrated(&t.record), 0);
                        m.moved.insert(t.key);
                    }
                }
                faults.count("merger_moved");
                m.stage = 1;
            }
            1 if now >= at + 10.0 => {
                // The new system goes on with each moved dossier.
                let truth = verify::truth_items(&lock(&m.new).truth());
                for t in truth.iter().filter(|t| m.moved.contains(&t.key)) {
                    lock(&m.new).upsert_raw(cutover::with_step(&t.record, "Hệ thống mới tiếp tục xử lý"), 0);
                }
                m.stage = 2;
            }
            2 if now >= at + 20.0 => {
                // The old system, touched after the move: ignored once the move is recorded.
                let moved_here = |mahoso: &str| {
                    store
                        .read(|c| {
                            c.prepare_cached(
                                "SELECT EXISTS (SELECT 1 FROM dossier WHERE mahoso = ?1 AND source = ?2)",
                            )?
                            .query_row(rusqlite::params![mahoso, NEW_SOURCE], |r| r.get::<_, bool>(0))
                        })
                        .unwrap_or(false)
                };
                let truth = verify::truth_items(&lock(&self.old).truth());
                for t in truth.iter().filter(|t| m.moved.contains(&t.key) && moved_here(&t.key)) {
                    lock(&self.old)
                        .upsert_raw(cutover::with_step(&t.record, "Bước làm muộn ở hệ thống cũ"), 0);
                    faults.count("merger_late_old_step");
                }
                m.stage = 3;
            }
            _ => {}
        }
    }
}

const OLD_SOURCE: &str = "tiengiang";
const NEW_SOURCE: &str = "dongthap";

/// Faults on or off, shared by the portals; counts what was injected.
struct FaultSwitch {
    on: AtomicBool,
    counts: Mutex<BTreeMap<String, u64>>,
    rng: Mutex<fastrand::Rng>,
}

impl FaultSwitch {
    fn roll(&self, p: f64) -> bool {
        self.on.load(Ordering::Relaxed)
            && p > 0.0
            && self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64() < p
    }

    fn count(&self, kind: &str) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(kind.to_owned()).or_default() += 1;
    }

    fn u64(&self, range: std::ops::Range<u64>) -> u64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).u64(range)
    }
}

/// The provincial portal in memory: the simulator's world, with page faults.
#[derive(Clone)]
struct SimProvincial {
    world: Arc<Mutex<World>>,
    faults: Arc<FaultSwitch>,
    page_error: f64,
}

impl Source for SimProvincial {
    async fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, SourceError> {
        tokio::time::sleep(Duration::from_millis(self.faults.u64(1..20))).await;
        if self.faults.roll(self.page_error) {
            self.faults.count("page_error");
            return Err(SourceError {
                reason: "HTTP 500 (simulated)".into(),
                http_status: Some(500),
                timeout: false,
            });
        }
        let mut world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let (items, has_more) =
            world.list(after.map(|c| (c.updated_at.as_microsecond(), c.id.as_str())), limit);
        Ok(Page::from_listing(items, has_more))
    }
}

/// The national portal in memory: the mock's core behind seeded transport faults and crashes.
#[derive(Clone)]
struct SimTransport {
    core: Arc<NationalCore>,
    faults: Arc<FaultSwitch>,
    scenario: Arc<Scenario>,
    clock: TokioClock,
    origin: jiff::Timestamp,
    crash: Arc<Notify>,
    crashing: Arc<AtomicBool>,
    crashes: Arc<std::sync::atomic::AtomicU32>,
}

/// Crashes right after an applied write, at most this many per seed.
const MAX_CRASHES_AFTER_APPLY: u32 = 6;

impl SimTransport {
    fn retry(kind: TransientKind, maybe_applied: bool, retry_after: Option<Duration>) -> Answer {
        Answer::Retry(Transient {
            kind,
            reason: format!("simulated {}", kind.label()),
            maybe_applied,
            retry_after,
            http_status: None,
        })
    }

    fn in_outage(&self) -> bool {
        let t = self.clock.now().duration_since(self.origin).as_secs_f64();
        self.faults.on.load(Ordering::Relaxed) && self.scenario.outages.iter().any(|(a, b)| t >= *a && t < *b)
    }
}

impl Transport for SimTransport {
    async fn fetch_token(&self, client_id: &str, client_secret: &Secret) -> Result<Granted, Answer> {
        tokio::time::sleep(Duration::from_millis(self.faults.u64(1..30))).await;
        if self.crashing.load(Ordering::Relaxed) {
            return std::future::pending().await;
        }
        if self.in_outage() {
            self.faults.count("outage_503");
            return Err(Self::retry(TransientKind::Unavailable, false, None));
        }
        let (status, answer) = self.core.token(
            Some("client_credentials"),
            Some((client_id.to_owned(), client_secret.expose().to_owned())),
        );
        token_answer(Ok(RawResponse {
            status: status.as_u16(),
            retry_after: None,
            content_type: Some("application/json".into()),
            body: Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()),
        }))
    }

    async fn post<B: serde::Serialize + Sync + ?Sized>(
        &self,
        target: Target,
        bearer: Option<&str>,
        body: &B,
    ) -> Answer {
        let body = serde_json::to_value(body).unwrap_or(Value::Null);
        let s = &self.scenario;
        tokio::time::sleep(Duration::from_millis(self.faults.u64(1..30))).await;
        if self.crashing.load(Ordering::Relaxed) {
            return std::future::pending().await;
        }
        if self.in_outage() {
            self.faults.count("outage_503");
            return Self::retry(TransientKind::Unavailable, false, None);
        }
        let f = &self.faults;
        if target == Target::Integration {
            if f.roll(s.rate_limited) {
                f.count("rate_limited_429");
                return Self::retry(
                    TransientKind::RateLimited,
                    false,
                    Some(Duration::from_secs(f.u64(1..3))),
                );
            }
            if f.roll(s.error_before) {
                f.count("error_500_not_applied");
                return Self::retry(TransientKind::ServerError, true, None);
            }
            if f.roll(s.timeout_before) {
                f.count("timeout_not_applied");
                tokio::time::sleep(Duration::from_secs(5)).await;
                return Self::retry(TransientKind::Timeout, true, None);
            }
        }
        if target == Target::Integration
            && self.core.auth_mode() == MockAuth::OAuth2
            && !self.core.bearer_valid(bearer)
        {
            // The gateway refuses an expired token before the adapter sees the call.
            return classify(Ok(RawResponse {
                status: 401,
                retry_after: None,
                content_type: Some("application/json".into()),
                body: Bytes::from_static(br#"{"error": "invalid_token"}"#),
            }));
        }
        let look_up = body.get("service").and_then(Value::as_str) == Some(Service::LookUp.name());
        let mut answer = match target {
            Target::Auth => self.core.auth(Some(&body)),
            Target::Integration => self.core.integrate(Ok(body), ""),
        };
        if look_up && f.roll(s.readback_rewrite) {
            f.count("readback_rewritten");
            rewrite_look_up(&mut answer, f.u64(0..3));
        }
        if target == Target::Integration {
            if self.crashes.load(Ordering::Relaxed) < MAX_CRASHES_AFTER_APPLY && f.roll(s.crash_after_apply) {
                // Applied, and the engine dies before it hears so.
                f.count("crash_after_apply");
                self.crashes.fetch_add(1, Ordering::Relaxed);
                self.crashing.store(true, Ordering::Relaxed);
                self.crash.notify_one();
                return std::future::pending().await;
            }
            if f.roll(s.dropped) {
                f.count("dropped_after_apply");
                return Self::retry(TransientKind::Dropped, true, None);
            }
            if f.roll(s.error_after) {
                f.count("error_500_applied");
                return Self::retry(TransientKind::ServerError, true, None);
            }
            if f.roll(s.timeout_after) {
                f.count("timeout_applied");
                tokio::time::sleep(Duration::from_secs(5)).await;
                return Self::retry(TransientKind::Timeout, true, None);
            }
        }
        // Through the real classifier, as bytes, so that both error_code forms are read.
        let raw = RawResponse {
            status: 200,
            retry_after: None,
            content_type: Some("application/json".into()),
            body: Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()),
        };
        classify(Ok(raw))
    }
}

fn status_map() -> StatusMap {
    DEFAULT_STATUS_MAP.iter().filter_map(|(k, v)| Some(((*k).to_owned(), NationalStatus::new(*v)?))).collect()
}

/// The mapping an operator switches to: supplement and fee requests counted as processing
/// (harmless to the national status rules, but every such history entry changes its status).
fn changed_status_map() -> StatusMap {
    let mut map = status_map();
    for local in ["waiting", "paying"] {
        if let Some(processing) = NationalStatus::new(4) {
            map.insert(local.to_owned(), processing);
        }
    }
    map
}

/// A look-up answer as a gateway in front of the adapter may rewrite it: the same facts in
/// another form. `style` picks the form: codes become numbers throughout; times RFC 3339
/// (0), `dd/MM/yyyy HH:mm:ss` (1) or `yyyy-MM-dd HH:mm:ss` (2); text padded (0), decomposed
/// (NFD, 1), or with doubled inner spaces (2).
fn rewrite_look_up(answer: &mut Value, style: u64) {
    use unicode_normalization::UnicodeNormalization;
    fn rewrite(map: &mut serde_json::Map<String, Value>, style: u64) {
        for (key, value) in map.iter_mut() {
            let Value::String(s) = value else { continue };
            let time = (key.starts_with("Ngay") || key == "ThoiDiemXuLy")
                .then(|| crate::domain::dates::parse_national(s))
                .flatten();
            if let Some(dt) = time {
                *value = Value::String(match style {
                    0 => format!("{}+07:00", dt.strftime("%Y-%m-%dT%H:%M:%S")),
                    1 => dt.strftime("%d/%m/%Y %H:%M:%S").to_string(),
                    _ => dt.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                });
            } else if s.len() <= 2 && !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
                *value = Value::from(s.parse::<i64>().unwrap_or(0));
            } else if key != "MaHoSo" && !s.is_empty() {
                *value = Value::String(match style {
                    0 => format!("  {s} "),
                    1 => s.nfd().collect(),
                    _ => s.replace(' ', "  "),
                });
            }
        }
    }
    let Some(result) = answer.get_mut("result").and_then(Value::as_array_mut) else { return };
    for dossier in result {
        let Some(map) = dossier.as_object_mut() else { continue };
        let mut entries = map.remove("QuaTrinhXuLy");
        rewrite(map, style);
        if let Some(Value::Array(list)) = &mut entries {
            for e in list.iter_mut().filter_map(Value::as_object_mut) {
                rewrite(e, style);
            }
        }
        if let Some(entries) = entries {
            map.insert("QuaTrinhXuLy".into(), entries);
        }
    }
}

/// Where simulation databases live: memory-backed when the machine has it.
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// Runs one seed to its verdict.
pub fn run(seed: u64) -> SimReport {
    // Time only: no sockets here, and without the IO driver parking costs no syscall.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return SimReport { seed, failures: vec![format!("no runtime: {e}")], ..SimReport::default() };
        }
    };
    let keep = std::env::var_os("DVC_SYNC_SIM_KEEP").is_some();
    let dir = match tempfile::Builder::new()
        .prefix("dvc-sync-sim-")
        .disable_cleanup(keep)
        .tempdir_in(scratch_dir())
    {
        Ok(d) => d,
        Err(e) => {
            return SimReport {
                seed,
                failures: vec![format!("no scratch directory: {e}")],
                ..SimReport::default()
            };
        }
    };
    if keep {
        eprintln!("seed {seed}: database kept in {}", dir.path().display());
    }
    let db = dir.path().join("sim.db");
    if let Err(e) = start_from_template(&db) {
        return SimReport { seed, failures: vec![format!("no fresh database: {e}")], ..SimReport::default() };
    }
    runtime.block_on(run_in(seed, &db))
}

/// Writes a freshly migrated, empty database at `db`. The migrations run once per process,
/// into a template whose bytes every seed starts from: running them for each seed would cost
/// a large share of the simulation's time, and what a seed tests starts after they have run.
fn start_from_template(db: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    static TEMPLATE: std::sync::OnceLock<Result<Vec<u8>, String>> = std::sync::OnceLock::new();
    let bytes = TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("dvc-sync-sim-template-").tempdir_in(scratch_dir());
        let dir = dir.map_err(|e| e.to_string())?;
        let path = dir.path().join("template.db");
        // Closing the store checkpoints its WAL into the file.
        drop(
            Store::open_with(&path, Durability::SimulationOnly, &Default::default())
                .map_err(|e| e.to_string())?,
        );
        std::fs::read(&path).map_err(|e| e.to_string())
    });
    let bytes = bytes.as_ref().map_err(Clone::clone)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
        .map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| e.to_string())
}

async fn run_in(seed: u64, db: &Path) -> SimReport {
    let mut scenario = Scenario::draw(seed);
    let plan = MergerPlan::draw(seed, scenario.fault_phase, &scenario.knobs);
    // A merged province's status_map stays: a moved dossier the new system leaves as it is
    // would keep the status it was read with under the old mapping (a new mapping applies to
    // the versions read after it).
    if plan.is_some() {
        scenario.map_change_at = None;
    }
    let scenario = Arc::new(scenario);
    let origin = "2026-03-02T01:00:00Z".parse::<jiff::Timestamp>().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let clock = TokioClock::starting_at(origin);
    let micros = Arc::new(move || clock.now().as_microsecond());
    let mut knobs = scenario.knobs.clone();
    if let Some(plan) = &plan {
        knobs.changes_per_second = plan.old_changes_per_second;
    }
    let world = Arc::new(Mutex::new(World::new(knobs, micros.clone())));
    let mut province = Province {
        old: world.clone(),
        merger: plan.map(|plan| Merger {
            new: Arc::new(Mutex::new(World::new(plan.knobs.clone(), micros))),
            plan,
            moved: BTreeSet::new(),
            stage: 0,
        }),
    };
    let faults = Arc::new(FaultSwitch {
        on: AtomicBool::new(true),
        counts: Mutex::new(BTreeMap::new()),
        rng: Mutex::new(fastrand::Rng::with_seed(seed ^ 0xfa17)),
    });
    let national_config = NationalConfig {
        faults: Faults {
            session_ttl_seconds: scenario.session_ttl,
            max_items_per_call: scenario.max_items,
            seed,
            ..Faults::default()
        },
        // Every other seed reaches the portal through an OAuth2 gateway: both modes keep the promise.
        auth: if seed % 2 == 1 { MockAuth::OAuth2 } else { MockAuth::Session },
        // A merged province's account is the new unit's, the old unit among its predecessors.
        madonvi: if province.merger.is_some() { NEW_UNIT } else { OLD_UNIT }.into(),
        predecessors: province.merger.as_ref().map(|_| vec![OLD_UNIT.to_owned()]).unwrap_or_default(),
        ..NationalConfig::default()
    };
    let credentials = match national_config.auth {
        MockAuth::Session => Credentials::Session {
            username: national_config.username.clone(),
            password: Secret::new(national_config.password.clone()),
            renew_after: Duration::from_secs(60),
        },
        MockAuth::OAuth2 => Credentials::OAuth2 {
            client_id: national_config.username.clone(),
            client_secret: Secret::new(national_config.password.clone()),
        },
    };
    let core = Arc::new(NationalCore::new(national_config.clone()));
    let crash = Arc::new(Notify::new());
    let crashing = Arc::new(AtomicBool::new(false));
    let crashes_after_apply = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let map = status_map();
    let cfg = EngineConfig {
        page_size: scenario.page_size,
        poll_interval: Duration::from_secs_f64(scenario.poll_interval),
        look_back: Duration::from_secs_f64(scenario.look_back),
        reconcile_interval: Some(Duration::from_secs(30)),
        poll_retry: (Duration::from_millis(100), Duration::from_secs(2)),
        push_retry: (Duration::from_millis(200), Duration::from_secs(4)),
        batch_size: scenario.batch_size,
        max_concurrency: 4,
        round_size: scenario.batch_size * 16,
        status_map: map.clone(),
        drain: Duration::from_secs(5),
        heartbeat: Duration::from_secs(10),
        seed,
        // Every dossier read back within a virtual minute: the audit runs beside everything
        // else and must repair what the national side loses.
        audit_per_second: 5.0,
        audit_cycle: Duration::from_secs(60),
        // Every other world minimises personal data as soon as a dossier is finished and
        // verified: what the audit then repairs is read again from the source.
        personal_data: seed.is_multiple_of(2).then_some(Duration::ZERO),
    };

    // The province lives on its own, in virtual time.
    let ticking = {
        let worlds = province.worlds();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for world in &worlds {
                    lock(world).tick(Duration::from_millis(100));
                }
            }
        })
    };

    let mut report = SimReport { seed, ..SimReport::default() };
    let mut crash_times = scenario.crashes_at.iter().copied();
    let mut next_crash = crash_times.next();
    let elapsed = |clock: &TokioClock| clock.now().duration_since(origin).as_secs_f64();
    let limit = scenario.fault_phase + 900.0;
    let mut converged = false;
    let mut map_changed = false;
    let mut lost = false;
    let mut cfg = cfg;
    loop {
        // The operator changes status_map while the daemon is down (between a write whose
        // answer was lost and its read-back, when a crash left one).
        if !map_changed && report.crashes > 0 && scenario.map_change_at.is_some_and(|t| elapsed(&clock) >= t)
        {
            map_changed = true;
            faults.count("status_map_changed");
            cfg.status_map = changed_status_map();
        }
        let store = match Store::open_with(db, Durability::SimulationOnly, &Default::default()) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                report.failures.push(format!("cannot reopen the database: {e}"));
                break;
            }
        };
        let sink = NationalClient::with_transport(
            SimTransport {
                core: core.clone(),
                faults: faults.clone(),
                scenario: scenario.clone(),
                clock,
                origin,
                crash: crash.clone(),
                crashing: crashing.clone(),
                crashes: crashes_after_apply.clone(),
            },
            credentials.clone(),
            &national_config.madonvi,
        );
        let source = |world: &Arc<Mutex<World>>| SimProvincial {
            world: world.clone(),
            faults: faults.clone(),
            page_error: scenario.page_error,
        };
        let engine = match &province.merger {
            None => Engine::new(store.clone(), source(&world), sink, clock, cfg.clone()),
            Some(m) => {
                let settings = |name: &str, supersedes: &[&str]| SourceSettings {
                    name: name.into(),
                    supersedes: supersedes.iter().map(|s| (*s).to_owned()).collect(),
                    page_size: cfg.page_size,
                    poll_interval: cfg.poll_interval,
                    look_back: cfg.look_back,
                    reconcile_interval: cfg.reconcile_interval,
                    poll_retry: cfg.poll_retry,
                };
                let sources = vec![
                    (settings(OLD_SOURCE, &[]), source(&world)),
                    (settings(NEW_SOURCE, &[OLD_SOURCE]), source(&m.new)),
                ];
                Engine::with_sources(store.clone(), sources, sink, clock, cfg.clone())
            }
        };
        let engine = match engine {
            Ok(e) => e,
            Err(e) => {
                report.failures.push(format!("cannot start the engine: {e}"));
                break;
            }
        };
        let token = CancellationToken::new();
        let running = {
            let engine = engine.clone();
            let token = token.clone();
            tokio::spawn(async move { engine.run(token).await })
        };
        // Until a crash, the end of the fault phase, or convergence.
        let crashed = loop {
            let now = elapsed(&clock);
            if faults.on.load(Ordering::Relaxed) && now >= scenario.fault_phase {
                faults.on.store(false, Ordering::Relaxed);
            }
            province.advance(now, &store, &cfg.status_map, &faults);
            // A history is truncated only once the province is done with it (see lose_national).
            if !lost
                && scenario
                    .national_loss
                    .is_some_and(|(at, kind)| now >= at && (kind != 2 || province.finished()))
            {
                lost = true;
                let kind = scenario.national_loss.map_or(0, |(_, k)| k);
                let (mut truth, moved) = province.truth();
                truth.extend(moved);
                lose_national(&core, &store, &truth, &faults, kind);
            }
            if next_crash.is_some_and(|t| now >= t) {
                next_crash = crash_times.next();
                faults.count("crash_random");
                break true;
            }
            if crashing.load(Ordering::Relaxed) {
                break true;
            }
            if !faults.on.load(Ordering::Relaxed)
                && (lost || scenario.national_loss.is_none())
                && settled(&province, &core, &store, &cfg.status_map, map_changed)
            {
                converged = true;
                break false;
            }
            if now > limit {
                break false;
            }
            tokio::select! {
                biased;
                () = crash.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        };
        if crashed {
            report.crashes += 1;
            running.abort();
            let _ = running.await;
            // Let the aborted tasks be dropped before the database is opened again.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            crashing.store(false, Ordering::Relaxed);
            drop(engine);
            continue;
        }
        token.cancel();
        let _ = running.await;
        break;
    }
    ticking.abort();
    report.virtual_seconds = elapsed(&clock);
    report.faults = faults.counts.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let (mut truth, moved) = province.truth();
    let state = core.state();
    let stats = core.stats();
    let verdict = verify::compare_merged(&truth, &moved, &state, &stats, &cfg.status_map, map_changed);
    if std::env::var_os("DVC_SYNC_SIM_DEBUG").is_some() {
        for key in verdict.not_synchronized.keys() {
            let t = truth.iter().chain(&moved).find(|t| &t.key == key);
            eprintln!(
                "{key}\n truth {}\n national {}",
                t.map(|t| t.record.to_string()).unwrap_or_default(),
                state.get(key).map(|v| v.to_string()).unwrap_or_default()
            );
        }
    }
    report.merger = province.merger.is_some();
    report.moved = moved.len();
    truth.extend(moved);
    report.dossiers = verdict.dossiers;
    report.valid = verdict.valid;
    report.synchronized = verdict.synchronized;
    if !converged {
        report
            .failures
            .push(format!("did not converge within {limit:.0} virtual seconds: {}", verdict.summary()));
    } else if !verdict.clean() || verdict.synchronized != verdict.valid {
        report.failures.push(verdict.summary());
    }
    match Store::open(db) {
        Ok(store) => match store.read(|c| {
            let ignored = crate::store::meta_get(c, crate::sync::poll::record::IGNORED)?;
            Ok((
                parked_problems(c, &truth)?,
                minimised(c)?,
                ignored.and_then(|v| v.parse().ok()).unwrap_or(0),
            ))
        }) {
            Ok(((problems, quarantined, dead), (minimised, reread), ignored)) => {
                report.ignored = ignored;
                report.failures.extend(problems);
                report.quarantined = quarantined;
                report.dead = dead;
                report.minimised = minimised;
                report.reread = reread;
            }
            Err(e) => report.failures.push(format!("cannot read the parked items: {e}")),
        },
        Err(e) => report.failures.push(format!("cannot reopen the database: {e}")),
    }
    let fingerprint = serde_json::to_string(&(&state, &stats)).unwrap_or_default();
    report.fingerprint = stable_hash(fingerprint.as_bytes()) as u64;
    report.ok = report.failures.is_empty();
    report
}

/// The national side loses data (see [`Scenario::national_loss`]). Histories are truncated only
/// once the province is done (the caller waits for it), of dossiers whose every entry is there
/// and in sync here: an entry sent after the loss would leave a gap that no append can fill
/// (the audit parks such a dossier, rightly).
fn lose_national(core: &NationalCore, store: &Store, truth: &[TruthItem], faults: &FaultSwitch, kind: u8) {
    let state = core.state();
    match kind {
        0 => {
            core.forget_all();
            faults.count("national_lost_everything");
        }
        1 => {
            let keys: Vec<&String> = state.keys().collect();
            if !keys.is_empty() {
                let key = keys[faults.u64(0..keys.len() as u64) as usize];
                core.forget(key);
                faults.count("national_lost_one");
            }
        }
        _ => {
            let in_sync = |mahoso: &str| {
                store
                    .read(|c| {
                        c.prepare_cached(
                            "SELECT EXISTS (SELECT 1 FROM dossier d WHERE d.mahoso = ?1 AND d.inflight = 0
                                 AND d.acked_history = d.history_len
                                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mahoso = d.mahoso))",
                        )?
                        .query_row([mahoso], |r| r.get::<_, bool>(0))
                    })
                    .unwrap_or(false)
            };
            let mut truncated = 0;
            for (mahoso, held) in &state {
                let entries = held["history"].as_array().map_or(0, Vec::len);
                // Everything the province holds of it is there: nothing more will be sent.
                let complete = truth.iter().any(|t| {
                    &t.key == mahoso && t.record["QuaTrinhXuLy"].as_array().map_or(0, Vec::len) == entries
                });
                if truncated < 3 && entries >= 2 && complete && in_sync(mahoso) {
                    core.truncate(mahoso, entries / 2);
                    truncated += 1;
                    faults.count("national_history_truncated");
                }
            }
        }
    }
}

/// Converged: the province finished, the outbox is empty, and the national copy is complete.
fn settled(
    province: &Province,
    core: &NationalCore,
    store: &Store,
    map: &StatusMap,
    map_changed: bool,
) -> bool {
    if !province.finished() {
        return false;
    }
    // A dossier waiting to be read again from its source is work under way.
    let waiting = |c: &rusqlite::Connection| {
        c.query_row(
            "SELECT EXISTS (SELECT 1 FROM dead WHERE kind = ?1)",
            [crate::sync::minimise::WAITING_FOR_SOURCE],
            |r| r.get::<_, bool>(0),
        )
    };
    let idle = store.read(status::dossier_counts).is_ok_and(|d| d.pending + d.retrying == 0)
        && store.read(waiting).is_ok_and(|w| !w);
    if !idle {
        return false;
    }
    let (truth, moved) = province.truth();
    let verdict = verify::compare_merged(&truth, &moved, &core.state(), &core.stats(), map, map_changed);
    verdict.not_synchronized.is_empty()
}

/// (dossiers minimised, dossiers read again from the source).
fn minimised(c: &rusqlite::Connection) -> rusqlite::Result<(usize, usize)> {
    let n: i64 =
        c.query_row("SELECT COUNT(*) FROM dossier WHERE minimised_at IS NOT NULL", [], |r| r.get(0))?;
    let reread =
        crate::store::meta_get(c, crate::sync::minimise::REREAD)?.and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((n as usize, reread))
}

/// Quarantined and dead must be exactly what the simulator injected.
fn parked_problems(
    conn: &rusqlite::Connection,
    truth: &[TruthItem],
) -> rusqlite::Result<(Vec<String>, usize, usize)> {
    let rows = |sql: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(sql)?;
        stmt.query_map([], |r| r.get(0))?.collect()
    };
    let quarantined: BTreeSet<String> = rows("SELECT key FROM quarantine")?.into_iter().collect();
    let dead: BTreeSet<String> = rows("SELECT mahoso FROM dead")?.into_iter().collect();
    let mut problems = Vec::new();
    let mut keyed = BTreeSet::new();
    let mut keyless = 0;
    for t in truth.iter().filter(|t| t.defect.is_some()) {
        match t.record.get("MaHoSo").and_then(Value::as_str) {
            Some(listed) => {
                keyed.insert(listed.to_owned());
            }
            None => keyless += 1,
        }
    }
    let got_keyed: BTreeSet<String> =
        quarantined.iter().filter(|k| !k.starts_with("no-MaHoSo:")).cloned().collect();
    if got_keyed != keyed {
        problems.push(format!("quarantined {got_keyed:?}, injected {keyed:?}"));
    }
    let got_keyless = quarantined.len() - got_keyed.len();
    if got_keyless != keyless {
        problems.push(format!("{got_keyless} quarantined without a MaHoSo, {keyless} injected"));
    }
    let expected_dead: BTreeSet<String> =
        truth.iter().filter(|t| t.defect.is_none() && t.unknown_procedure).map(|t| t.key.clone()).collect();
    if dead != expected_dead {
        problems.push(format!("dead {dead:?}, injected unknown procedures {expected_dead:?}"));
    }
    Ok((problems, quarantined.len(), dead.len()))
}

/// Runs `count` seeds from `first` on `threads` threads; returns every report.
pub fn run_many(first: u64, count: u64, threads: usize) -> Vec<SimReport> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(first));
    let end = first + count;
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return out;
                    }
                    out.push(run(seed));
                }
            })
        })
        .collect();
    let mut all: Vec<SimReport> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
    all.sort_by_key(|r| r.seed);
    all
}

/// The command that replays a seed exactly.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run --release -- simulate --seed {seed}")
}
