//! The provincial portal mock (`dvc-sync mock provincial`): a simulated one-stop system that
//! files dossiers and moves them through their lives, served through the read API of
//! the provincial listing API with its (updated_at, MaHoSo) cursor, late visibility, messy and bad
//! records, page faults, and `/_mock/` views of the whole truth.

pub mod cutover;
pub mod life;

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque},
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use jiff::{Timestamp, civil::Date};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{net::TcpListener, time::MissedTickBehavior};

use self::life::{Life, Rates, Traits};
use super::{
    faults::{html_error, merge_patch},
    server::{self, MockServer},
};
use crate::{
    domain::dates::{format_rfc3339_vn, to_vn_local},
    mock::catalogue::UNKNOWN_PROCEDURE_CODES,
};

/// A provincial dossier as the simulator knows it.
#[derive(Debug, Clone)]
pub struct TruthItem {
    pub key: String,
    pub record: Value,
    pub statuses: Vec<String>,
    pub defect: Option<String>,
    pub unknown_procedure: bool,
}

/// Reads truth items as `/_mock/truth` (or `World::truth`) lists them.
pub fn truth_items(items: &[Value]) -> Vec<TruthItem> {
    items
        .iter()
        .map(|item| TruthItem {
            key: item["key"].as_str().unwrap_or("").to_owned(),
            record: item["record"].clone(),
            statuses: item["statuses"]
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            defect: item["defect"].as_str().map(str::to_owned),
            unknown_procedure: item["unknown_procedure"] == Value::Bool(true),
        })
        .collect()
}

/// Microseconds since the Unix epoch: the wall clock for the mock server, a virtual one in
/// simulations.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system's clock.
pub(crate) fn wall_clock() -> Clock {
    Arc::new(|| Timestamp::now().as_microsecond())
}

/// Start-up settings of the provincial mock.
#[derive(Debug, Clone)]
pub struct ProvincialConfig {
    pub api_key: String,
    pub knobs: Knobs,
}

impl Default for ProvincialConfig {
    fn default() -> Self {
        Self { api_key: "provincial-secret-key".into(), knobs: Knobs::default() }
    }
}

/// Every knob of the provincial listing API: flags at start (kebab case), `PUT /_mock/faults`
/// (partial JSON) at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// How many dossiers the simulation files over the run.
    #[arg(long, default_value_t = 1_000)]
    pub dossiers: u32,
    /// Changes (a new dossier or one step of one) per second; 0 files every dossier's whole
    /// life at once, before the first page is served (a backfill).
    #[arg(long, default_value_t = 50.0)]
    pub changes_per_second: f64,
    /// Seed of the simulation (who files what, and every life) and of the page faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of dossiers with a defect the daemon must quarantine.
    #[arg(long, default_value_t = 0.02)]
    pub bad_record_rate: f64,
    /// Share of records with NFD text, numbers for strings, over-long text or RFC 3339 dates.
    #[arg(long, default_value_t = 0.10)]
    pub messy_rate: f64,
    /// Share of dossiers whose MaTTHC the national catalogue does not know.
    #[arg(long, default_value_t = 0.01)]
    pub unknown_procedure_rate: f64,
    /// Each change becomes visible up to this long after its updated_at.
    #[arg(long, default_value_t = 0)]
    pub late_visibility_ms: u64,
    /// Share of pages answered HTTP 500 with an HTML page.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of pages answered 200 with a body that is cut short, HTML, or not JSON.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Delay before every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Every call gets HTTP 503.
    #[arg(long, default_value_t = false)]
    pub outage: bool,
    /// The system's unit code: its last segment is the province of every MaHoSo it files, so
    /// that two mocks (H58, H20) are a merged province's two predecessors. Fixed at start.
    #[arg(long, default_value = crate::mock::catalogue::PROVINCE_UNIT)]
    #[serde(default = "default_unit")]
    pub madonvi: String,
}

fn default_unit() -> String {
    crate::mock::catalogue::PROVINCE_UNIT.to_owned()
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            dossiers: 1_000,
            changes_per_second: 50.0,
            seed: 1,
            bad_record_rate: 0.02,
            messy_rate: 0.10,
            unknown_procedure_rate: 0.01,
            late_visibility_ms: 0,
            error_rate: 0.0,
            malformed_rate: 0.0,
            latency_ms: 0,
            outage: false,
            madonvi: default_unit(),
        }
    }
}

impl Knobs {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (name, rate) in [
            ("bad_record_rate", self.bad_record_rate),
            ("messy_rate", self.messy_rate),
            ("unknown_procedure_rate", self.unknown_procedure_rate),
            ("error_rate", self.error_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{name} must be between 0 and 1"));
            }
        }
        if !crate::domain::mahoso::is_unit_code(&self.madonvi) {
            problems.push(format!("madonvi {:?} is not a unit code like \"000.00.00.H58\"", self.madonvi));
        }
        if !(self.changes_per_second.is_finite() && self.changes_per_second >= 0.0) {
            problems.push("changes_per_second must be 0 (all at once) or positive".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    fn rates(&self) -> Rates {
        Rates {
            bad_record: self.bad_record_rate,
            messy: self.messy_rate,
            unknown_procedure: self.unknown_procedure_rate,
        }
    }
}

/// Starts the mock on `listener`. With `changes_per_second = 0` every dossier is filed and
/// lived before this returns.
pub async fn start(listener: TcpListener, config: ProvincialConfig) -> anyhow::Result<MockServer> {
    config.knobs.validate().map_err(anyhow::Error::msg)?;
    let mock =
        Arc::new(Mock { api_key: config.api_key, world: Mutex::new(World::new(config.knobs, wall_clock())) });
    let router = Router::new()
        .route("/api/v1/dossiers", get(list_dossiers))
        .route("/api/v1/dossiers/{mahoso}", get(one_dossier))
        .route("/_mock/dossiers", post(upsert_raw))
        .route("/_mock/dossiers/{mahoso}", axum::routing::delete(delete_record))
        .route("/_mock/truth", get(truth))
        .route("/_mock/stats", get(stats))
        .route("/_mock/faults", get(get_faults).put(put_faults))
        .route("/_mock/pause", post(pause))
        .route("/_mock/resume", post(resume))
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(mock.clone());
    let mut server = server::spawn(listener, router)?;
    let token = server.token();
    server.add_task(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        // After a stall (a paused process, a loaded machine) catch up in one tick rather than
        // firing a burst of ticks; the tick itself accounts for the time that passed.
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            mock.lock().tick(now.duration_since(last));
            last = now;
        }
    }));
    Ok(server)
}

struct Mock {
    api_key: String,
    world: Mutex<World>,
}

impl Mock {
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One record of the portal, generated or upserted raw.
struct Slot {
    /// The MaHoSo the record carries ("" when it has none): the listing's tie-breaker.
    list_key: Arc<str>,
    kind: SlotKind,
    /// The newest version, visible or not.
    version: u32,
    updated_at: i64,
    /// The version the listing shows, and its updated_at.
    visible: Option<(u32, i64)>,
    /// When the newest version becomes visible: a record's versions appear in order.
    visible_at: i64,
}

enum SlotKind {
    /// Rendered from the plan: version v is the record after v steps.
    Generated { index: u32, traits: Traits, steps: u32 },
    /// Stored as given; versions not yet visible are kept until they are.
    Raw { versions: VecDeque<(u32, Value)>, statuses: Vec<String> },
}

#[derive(Default, Serialize)]
struct Stats {
    dossiers_created: u64,
    changes: u64,
    bad_records: u64,
    messy_records: u64,
    unknown_procedure_records: u64,
    pages_served: u64,
    /// Pages answered with a cut-short, HTML or non-JSON body, and with HTTP 500/503.
    malformed_pages: u64,
    error_pages: u64,
    unauthorized: u64,
}

/// A record's version as rendered: (slot, version, updated_at).
type RenderKey = (u32, u32, i64);

/// Rendered records kept for a second read.
const RENDER_CACHE: usize = 4_096;

/// Pages are read twice (the daemon's head and look-back passes): recent renders are kept,
/// the whole cache dropped when full.
fn cached<V: Clone>(cache: &Mutex<HashMap<RenderKey, V>>, key: RenderKey, make: impl FnOnce() -> V) -> V {
    if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return v.clone();
    }
    let value = make();
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= RENDER_CACHE {
        cache.clear();
    }
    cache.insert(key, value.clone());
    value
}

/// The simulated province: every dossier, its versions and their visibility. The HTTP mock
/// serves it; the deterministic simulation drives it directly with virtual time.
pub struct World {
    clock: Clock,
    rendered: Mutex<HashMap<RenderKey, Value>>,
    /// The same records serialised, for the HTTP listing: a page is then mostly copied bytes.
    rendered_json: Mutex<HashMap<RenderKey, Arc<[u8]>>>,
    knobs: Knobs,
    /// Fixed at start so that run-time changes to `seed` do not rewrite existing lives.
    plan_seed: u64,
    /// The province of every MaHoSo filed (the last segment of `madonvi`), fixed at start.
    province: String,
    base_day: Date,
    rng: fastrand::Rng,
    slots: Vec<Slot>,
    by_truth_key: BTreeMap<Arc<str>, u32>,
    by_list_key: HashMap<Arc<str>, u32>,
    /// The visible version of every record, ordered as the listing serves them.
    listing: BTreeSet<(i64, Arc<str>, u32)>,
    /// Versions waiting to become visible: (visible_at, slot, version, updated_at).
    pending: BinaryHeap<Reverse<(i64, u32, u32, i64)>>,
    /// Generated records not yet in a final state.
    active: Vec<u32>,
    generated: u32,
    carry: f64,
    paused: bool,
    last_stamp: i64,
    stats: Stats,
    /// Every change in the order made, for a writer that keeps the province elsewhere (the
    /// OpenCPS tables of a real database); None unless asked for.
    journal: Option<Vec<Change>>,
}

/// One change of the simulated province: version `version` of record `slot`, stamped
/// `updated_at` (µs), visible from `visible_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub slot: u32,
    pub version: u32,
    pub updated_at: i64,
    pub visible_at: i64,
}

fn timestamp(micros: i64) -> Timestamp {
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl World {
    pub fn new(knobs: Knobs, clock: Clock) -> Self {
        Self::build(knobs, clock, false)
    }

    /// A world that keeps its journal of changes (see [`World::take_journal`]), from the
    /// first: with `changes_per_second = 0` the whole backfill is in it.
    pub(crate) fn with_journal(knobs: Knobs, clock: Clock) -> Self {
        Self::build(knobs, clock, true)
    }

    fn build(knobs: Knobs, clock: Clock, journal: bool) -> Self {
        let today = to_vn_local(timestamp(clock())).date();
        let span_days = i64::from(knobs.dossiers.div_ceil(life::PER_DAY)) + 7;
        let base_day = today.checked_sub(jiff::Span::new().days(span_days)).unwrap_or(today);
        let mut world = World {
            clock,
            rendered: Mutex::new(HashMap::new()),
            rendered_json: Mutex::new(HashMap::new()),
            plan_seed: knobs.seed,
            province: crate::domain::mahoso::province_of(&knobs.madonvi).to_owned(),
            rng: fastrand::Rng::with_seed(knobs.seed ^ 0x5eed),
            base_day,
            knobs,
            slots: Vec::new(),
            by_truth_key: BTreeMap::new(),
            by_list_key: HashMap::new(),
            listing: BTreeSet::new(),
            pending: BinaryHeap::new(),
            active: Vec::new(),
            generated: 0,
            carry: 0.0,
            paused: false,
            last_stamp: 0,
            stats: Stats::default(),
            journal: journal.then(Vec::new),
        };
        if world.knobs.changes_per_second == 0.0 {
            world.backfill();
        }
        world
    }

    fn enqueue(&mut self, change: Change) {
        self.pending.push(Reverse((change.visible_at, change.slot, change.version, change.updated_at)));
        if let Some(journal) = &mut self.journal {
            journal.push(change);
        }
    }

    /// The changes made since the last call, oldest first (empty without a journal).
    pub(crate) fn take_journal(&mut self) -> Vec<Change> {
        self.journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Version `version` of record `slot`, stamped `updated_at`, as the listing would serve it.
    pub(crate) fn record_at(&self, slot: u32, version: u32, updated_at: i64) -> Value {
        self.render(slot, version, updated_at)
    }

    fn plan(&self, index: u32, traits: &Traits) -> Life {
        life::plan(self.plan_seed, self.base_day, index, traits, &self.province)
    }

    /// A fresh updated_at: the wall clock, never behind an earlier stamp (equal to the
    /// previous one when the clock has not moved: a natural tie).
    fn stamp(&mut self) -> i64 {
        self.last_stamp = (self.clock)().max(self.last_stamp);
        self.last_stamp
    }

    /// A stamp no other record has: for records without a MaHoSo, which the listing's
    /// tie-breaker cannot tell apart, so that the cursor stays exact.
    fn unique_stamp(&mut self, at_least: i64) -> i64 {
        self.last_stamp = at_least.max(self.last_stamp + 1);
        self.last_stamp
    }

    /// When a change stamped `updated_at` on `slot` becomes visible.
    fn visibility(&mut self, slot: u32, updated_at: i64) -> i64 {
        let late = self.knobs.late_visibility_ms;
        let delay = if late > 0 { self.rng.i64(0..=(late as i64 * 1000)) } else { 0 };
        // A record's versions become visible in order (a row lock orders its writers).
        let at = (updated_at + delay).max(self.slots[slot as usize].visible_at);
        self.slots[slot as usize].visible_at = at;
        at
    }

    /// Files every remaining dossier at its final step, stamped in the recent past, 1 µs
    /// apart with some ties.
    fn backfill(&mut self) {
        let remaining = self.knobs.dossiers.saturating_sub(self.generated);
        let now = (self.clock)();
        let mut ts = now - i64::from(remaining) - 1;
        for i in 0..remaining {
            if i % 10 != 9 {
                ts += 1;
            }
            let slot = self.create_generated(ts, true);
            if let Some(pos) = self.active.iter().rposition(|s| *s == slot) {
                self.active.swap_remove(pos);
            }
        }
        self.last_stamp = self.last_stamp.max(now);
        self.promote(now);
    }

    /// Files the next dossier. `whole_life` lives it to the end in one version.
    fn create_generated(&mut self, updated_at: i64, whole_life: bool) -> u32 {
        let index = self.generated;
        self.generated += 1;
        let traits = Traits::draw(self.plan_seed, index, self.knobs.rates());
        let life = self.plan(index, &traits);
        let steps = life.steps.len() as u32;
        let version = if whole_life { steps } else { 1 };
        let truth_key: Arc<str> = life.mahoso.as_str().into();
        let list_key: Arc<str> = life.listed_mahoso(index, &traits).unwrap_or_default().into();
        let updated_at = if list_key.is_empty() {
            self.unique_stamp(updated_at)
        } else {
            self.last_stamp = self.last_stamp.max(updated_at);
            updated_at
        };
        let slot = self.slots.len() as u32;
        self.slots.push(Slot {
            list_key,
            kind: SlotKind::Generated { index, traits, steps },
            version,
            updated_at,
            visible: None,
            visible_at: 0,
        });
        self.by_truth_key.insert(truth_key, slot);
        self.stats.dossiers_created += 1;
        self.stats.changes += u64::from(version);
        self.stats.bad_records += u64::from(traits.defect.is_some());
        self.stats.messy_records += u64::from(traits.mess != 0);
        self.stats.unknown_procedure_records += u64::from(traits.unknown_procedure);
        if version < steps {
            self.active.push(slot);
        }
        let visible_at = self.visibility(slot, updated_at);
        self.enqueue(Change { slot, version, updated_at, visible_at });
        slot
    }

    /// One change of the simulation: a new dossier, or the next step of an active one,
    /// chosen in proportion to how many of each remain.
    fn change(&mut self, tie_with_previous: bool) {
        let to_create = self.knobs.dossiers.saturating_sub(self.generated) as usize;
        let total = to_create + self.active.len();
        if total == 0 {
            return;
        }
        let ts = if tie_with_previous { self.last_stamp } else { self.stamp() };
        if self.rng.usize(..total) < to_create {
            self.create_generated(ts, false);
            return;
        }
        let pick = self.rng.usize(..self.active.len());
        let slot = self.active[pick];
        let (own_previous, keyless) = {
            let s = &self.slots[slot as usize];
            (s.updated_at, s.list_key.is_empty())
        };
        let ts = if keyless {
            self.unique_stamp(ts)
        } else if ts <= own_previous {
            // A record's versions get strictly increasing stamps.
            self.last_stamp = self.last_stamp.max(own_previous + 1);
            own_previous + 1
        } else {
            ts
        };
        let s = &mut self.slots[slot as usize];
        s.version += 1;
        s.updated_at = ts;
        let version = s.version;
        if let SlotKind::Generated { steps, .. } = s.kind
            && version >= steps
        {
            self.active.swap_remove(pick);
        }
        self.stats.changes += 1;
        let visible_at = self.visibility(slot, ts);
        self.enqueue(Change { slot, version, updated_at: ts, visible_at });
    }

    /// Lets `elapsed` of simulated life happen.
    pub(crate) fn tick(&mut self, elapsed: Duration) {
        let now = (self.clock)();
        if !self.paused {
            let cps = self.knobs.changes_per_second;
            if cps == 0.0 {
                self.backfill_some(50_000);
            } else {
                let due = elapsed.as_secs_f64() * cps + self.carry;
                // At most one second of changes per tick: a stalled process does not burst.
                let n = due.floor().min(cps.max(1.0));
                self.carry = (due - n).min(1.0);
                for _ in 0..n as u64 {
                    let tie = self.rng.u8(0..5) == 0;
                    self.change(tie);
                }
            }
        }
        self.promote(now);
    }

    /// With `changes_per_second` set to 0 at run time: live up to `max` changes now.
    fn backfill_some(&mut self, max: usize) {
        for _ in 0..max {
            if self.generated >= self.knobs.dossiers && self.active.is_empty() {
                break;
            }
            self.change(false);
        }
    }

    /// Makes every version whose time has come visible.
    fn promote(&mut self, now: i64) {
        while let Some(Reverse((visible_at, slot, version, updated_at))) = self.pending.peek().copied() {
            if visible_at > now {
                break;
            }
            self.pending.pop();
            let s = &mut self.slots[slot as usize];
            if s.visible.is_some_and(|(v, _)| v >= version) {
                continue;
            }
            // A generated record overwritten raw while a version was still pending: that
            // version was never kept, and the raw one supersedes it.
            if let SlotKind::Raw { versions, .. } = &s.kind
                && !versions.iter().any(|(v, _)| *v == version)
            {
                continue;
            }
            if let Some((_, old)) = s.visible {
                self.listing.remove(&(old, s.list_key.clone(), slot));
            } else if !s.list_key.is_empty() {
                self.by_list_key.insert(s.list_key.clone(), slot);
            }
            s.visible = Some((version, updated_at));
            if let SlotKind::Raw { versions, .. } = &mut s.kind {
                while versions.len() > 1 && versions[0].0 < version {
                    versions.pop_front();
                }
            }
            self.listing.insert((updated_at, s.list_key.clone(), slot));
        }
    }

    fn truth_item(&self, key: &str, slot: u32) -> Value {
        let s = &self.slots[slot as usize];
        let record = self.render(slot, s.version, s.updated_at);
        let (statuses, defect, mess, unknown_procedure) = match &s.kind {
            SlotKind::Generated { index, traits, .. } => (
                self.plan(*index, traits).statuses(s.version as usize),
                traits.defect.map(|d| d.describe()),
                traits.mess_names(),
                traits.unknown_procedure,
            ),
            // A record written raw (a touched or edited copy of a generated one) is judged by
            // what it says: its procedure is unknown if the catalogue's unknown codes name it.
            SlotKind::Raw { statuses, .. } => {
                let unknown = record["MaTTHC"].as_str().is_some_and(|c| UNKNOWN_PROCEDURE_CODES.contains(&c));
                (statuses.clone(), None, Vec::new(), unknown)
            }
        };
        json!({
            "key": key,
            "record": record,
            "statuses": statuses,
            "defect": defect,
            "mess": mess,
            "unknown_procedure": unknown_procedure,
            "visible_version": s.visible.map(|(v, _)| v),
        })
    }

    /// A record as served: `version` of slot `slot`.
    fn render(&self, slot: u32, version: u32, updated_at: i64) -> Value {
        cached(&self.rendered, (slot, version, updated_at), || {
            self.render_uncached(slot, version, updated_at)
        })
    }

    /// A record as served, serialised (cached like `render`).
    fn render_json(&self, slot: u32, version: u32, updated_at: i64) -> Arc<[u8]> {
        cached(&self.rendered_json, (slot, version, updated_at), || {
            serde_json::to_vec(&self.render_uncached(slot, version, updated_at)).unwrap_or_default().into()
        })
    }

    fn render_uncached(&self, slot: u32, version: u32, updated_at: i64) -> Value {
        let s = &self.slots[slot as usize];
        match &s.kind {
            SlotKind::Generated { index, traits, .. } => {
                let life = self.plan(*index, traits);
                life.render(*index, traits, version as usize, timestamp(updated_at), version)
            }
            SlotKind::Raw { versions, .. } => versions
                .iter()
                .find(|(v, _)| *v == version)
                .map(|(_, value)| value.clone())
                .unwrap_or(Value::Null),
        }
    }

    /// One listing page strictly after `after` (updated_at in µs, MaHoSo), as visible now:
    /// `(items, has_more)`.
    pub fn list(&mut self, after: Option<(i64, &str)>, limit: usize) -> (Vec<Value>, bool) {
        let now = (self.clock)();
        self.promote(now);
        match self.page(after, limit) {
            Value::Object(mut page) => {
                let has_more = page.get("has_more") == Some(&Value::Bool(true));
                let items = match page.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                (items, has_more)
            }
            _ => (Vec::new(), false),
        }
    }

    /// Every record, visible or not, as `/_mock/truth` lists it.
    pub fn truth(&self) -> Vec<Value> {
        self.by_truth_key.iter().map(|(key, slot)| self.truth_item(key, *slot)).collect()
    }

    /// [`World::truth`], each item with its slot (the OpenCPS world numbers its rows by it).
    pub(crate) fn truth_by_slot(&self) -> Vec<(u32, Value)> {
        self.by_truth_key.iter().map(|(key, slot)| (*slot, self.truth_item(key, *slot))).collect()
    }

    pub fn finished(&self) -> bool {
        self.generated >= self.knobs.dossiers && self.active.is_empty()
    }

    /// The records of one listing page strictly after `after`, as (slot, visible version,
    /// updated_at), and whether more follow.
    fn page_entries(&self, after: Option<(i64, &str)>, limit: usize) -> (Vec<RenderKey>, bool) {
        let range = match after {
            Some((ts, id)) => {
                self.listing.range((Bound::Excluded((ts, Arc::<str>::from(id), u32::MAX)), Bound::Unbounded))
            }
            None => self.listing.range(..),
        };
        let mut entries: Vec<RenderKey> = range
            .take(limit + 1)
            .map(|(updated_at, _, slot)| {
                (*slot, self.slots[*slot as usize].visible.map_or(0, |(v, _)| v), *updated_at)
            })
            .collect();
        let has_more = entries.len() > limit;
        entries.truncate(limit);
        (entries, has_more)
    }

    fn page(&self, after: Option<(i64, &str)>, limit: usize) -> Value {
        let (entries, has_more) = self.page_entries(after, limit);
        let items: Vec<Value> = entries.into_iter().map(|(s, v, at)| self.render(s, v, at)).collect();
        json!({"items": items, "has_more": has_more})
    }

    /// `page` as the HTTP listing serves it, serialised from cached records.
    fn page_json(&self, after: Option<(i64, &str)>, limit: usize) -> Vec<u8> {
        let (entries, has_more) = self.page_entries(after, limit);
        let mut body = Vec::with_capacity(entries.len() * 3_000 + 32);
        body.extend_from_slice(b"{\"items\":[");
        for (i, (slot, version, updated_at)) in entries.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&self.render_json(slot, version, updated_at));
        }
        body.extend_from_slice(if has_more { b"],\"has_more\":true}" } else { b"],\"has_more\":false}" });
        body
    }

    /// Deletes the record `mahoso` (its life ends; versions still pending never appear):
    /// false if there is none.
    pub fn delete(&mut self, mahoso: &str) -> bool {
        let Some(slot) = self.by_truth_key.remove(mahoso) else { return false };
        let s = &mut self.slots[slot as usize];
        if let Some((_, at)) = s.visible {
            self.listing.remove(&(at, s.list_key.clone(), slot));
        }
        self.by_list_key.remove(&s.list_key);
        // Past any version still pending: promote() skips them.
        s.visible = Some((u32::MAX, i64::MIN));
        if let Some(pos) = self.active.iter().position(|a| *a == slot) {
            self.active.swap_remove(pos);
        }
        true
    }

    /// Upserts one raw record exactly as given (`POST /_mock/dossiers`), stamping its
    /// `updated_at` and `version`, visible after `delay_ms`.
    pub fn upsert_raw(&mut self, mut record: Value, delay_ms: u64) -> Value {
        let mahoso = record.get("MaHoSo").and_then(Value::as_str).map(str::to_owned);
        let status = record.get("TrangThai").map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned));
        let existing = mahoso.as_deref().and_then(|m| self.by_truth_key.get(m).copied());
        let slot = match existing {
            Some(slot) => slot,
            None => {
                let key: Arc<str> = match &mahoso {
                    Some(m) => m.as_str().into(),
                    None => format!("raw-{}", self.slots.len()).into(),
                };
                let slot = self.slots.len() as u32;
                self.slots.push(Slot {
                    list_key: mahoso.as_deref().unwrap_or("").into(),
                    kind: SlotKind::Raw { versions: VecDeque::new(), statuses: Vec::new() },
                    version: 0,
                    updated_at: 0,
                    visible: None,
                    visible_at: 0,
                });
                self.by_truth_key.insert(key, slot);
                self.stats.dossiers_created += 1;
                slot
            }
        };
        let ts = if self.slots[slot as usize].list_key.is_empty() {
            self.unique_stamp(0)
        } else {
            let own_previous = self.slots[slot as usize].updated_at;
            let ts = self.stamp();
            if ts <= own_previous { self.unique_stamp(own_previous + 1) } else { ts }
        };
        let s = &mut self.slots[slot as usize];
        s.version += 1;
        s.updated_at = ts;
        let version = s.version;
        if let Value::Object(map) = &mut record {
            map.insert("updated_at".into(), Value::String(format_rfc3339_vn(timestamp(ts))));
            map.insert("version".into(), json!(version));
        }
        // A generated record overwritten raw stops living its simulated life.
        if let SlotKind::Generated { index, traits, .. } = s.kind {
            let life = life::plan(self.plan_seed, self.base_day, index, &traits, &self.province);
            let steps = (version - 1) as usize;
            let mut versions = VecDeque::new();
            if let Some((v, at)) = s.visible {
                versions.push_back((v, life.render(index, &traits, v as usize, timestamp(at), v)));
            }
            s.kind = SlotKind::Raw { versions, statuses: life.statuses(steps) };
            if let Some(pos) = self.active.iter().position(|a| *a == slot) {
                self.active.swap_remove(pos);
            }
        }
        if let SlotKind::Raw { versions, statuses } = &mut s.kind {
            versions.push_back((version, record));
            if let Some(status) = status {
                statuses.push(status);
            }
        }
        self.stats.changes += 1;
        let visible_at = {
            let at = (ts + delay_ms as i64 * 1000).max(self.slots[slot as usize].visible_at);
            self.slots[slot as usize].visible_at = at;
            at
        };
        self.enqueue(Change { slot, version, updated_at: ts, visible_at });
        self.promote((self.clock)());
        json!({"MaHoSo": mahoso, "updated_at": format_rfc3339_vn(timestamp(ts)), "version": version})
    }
}

/// Transport faults on arrival: a delay, and maybe the answer that replaces the page.
fn transport(world: &mut World) -> (Duration, Option<Response>) {
    let delay = Duration::from_millis(world.knobs.latency_ms);
    let fault = if world.knobs.outage {
        Some(html_error(StatusCode::SERVICE_UNAVAILABLE))
    } else if world.knobs.error_rate > 0.0 && world.rng.f64() < world.knobs.error_rate {
        Some(html_error(StatusCode::INTERNAL_SERVER_ERROR))
    } else {
        None
    };
    world.stats.error_pages += u64::from(fault.is_some());
    (delay, fault)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Outage, errors, latency, then the API key: what a client meets, in order.
async fn gate(mock: &Mock, headers: &HeaderMap) -> Option<Response> {
    let (delay, fault) = transport(&mut mock.lock());
    tokio::time::sleep(delay).await;
    if fault.is_some() {
        return fault;
    }
    let key_ok = headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(mock.api_key.as_str());
    if !key_ok {
        mock.lock().stats.unauthorized += 1;
        return Some(json_error(StatusCode::UNAUTHORIZED, "missing or wrong X-API-Key"));
    }
    None
}

#[derive(Deserialize)]
struct ListQuery {
    updated_after: Option<String>,
    after_id: Option<String>,
    limit: Option<String>,
}

async fn list_dossiers(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Some(refusal) = gate(&mock, &headers).await {
        return refusal;
    }
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return json_error(StatusCode::BAD_REQUEST, "limit must be an integer from 1 to 1000"),
    };
    let after = match q.updated_after.as_deref().map(str::parse::<Timestamp>) {
        None => None,
        Some(Ok(ts)) => Some(ts.as_microsecond()),
        Some(Err(_)) => {
            return json_error(StatusCode::BAD_REQUEST, "updated_after must be an RFC 3339 timestamp");
        }
    };
    let mut world = mock.lock();
    let now = (world.clock)();
    world.promote(now);
    let body = world.page_json(after.map(|ts| (ts, q.after_id.as_deref().unwrap_or(""))), limit);
    let malformed = world.knobs.malformed_rate;
    if malformed > 0.0 && world.rng.f64() < malformed {
        world.stats.malformed_pages += 1;
        return match world.rng.u8(0..3) {
            0 => {
                let cut = world.rng.usize(1..body.len().max(2));
                ([(header::CONTENT_TYPE, "application/json")], body[..cut.min(body.len())].to_vec()).into_response()
            }
            1 => (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!DOCTYPE html><html><body><h1>Hệ thống đang bảo trì</h1><p>Vui lòng thử lại sau.</p></body></html>",
            )
                .into_response(),
            _ => ([(header::CONTENT_TYPE, "application/json")], "ORA-01555: snapshot too old").into_response(),
        };
    }
    world.stats.pages_served += 1;
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `DELETE /_mock/dossiers/{MaHoSo}`: the system deletes a record (after migrating it
/// elsewhere, say): gone from the listing and the truth. 404 if unknown.
async fn delete_record(State(mock): State<Arc<Mock>>, Path(mahoso): Path<String>) -> Response {
    if mock.lock().delete(&mahoso) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        json_error(StatusCode::NOT_FOUND, "no such record")
    }
}

async fn one_dossier(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Path(mahoso): Path<String>,
) -> Response {
    if let Some(refusal) = gate(&mock, &headers).await {
        return refusal;
    }
    let mut world = mock.lock();
    let now = (world.clock)();
    world.promote(now);
    let found = world.by_list_key.get(mahoso.as_str()).copied().and_then(|slot| {
        let (version, updated_at) = world.slots[slot as usize].visible?;
        Some(world.render(slot, version, updated_at))
    });
    match found {
        Some(record) => Json(record).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "no such dossier"),
    }
}

#[derive(Deserialize)]
struct UpsertQuery {
    /// Make this version visible only this long after its updated_at (late visibility).
    visible_after_ms: Option<u64>,
}

async fn upsert_raw(State(mock): State<Arc<Mock>>, Query(q): Query<UpsertQuery>, body: Bytes) -> Response {
    let record: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    Json(mock.lock().upsert_raw(record, q.visible_after_ms.unwrap_or(0))).into_response()
}

#[derive(Deserialize)]
struct TruthQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn truth(State(mock): State<Arc<Mock>>, Query(q): Query<TruthQuery>) -> Response {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let world = mock.lock();
    let range = match &q.after {
        Some(after) => {
            world.by_truth_key.range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded))
        }
        None => world.by_truth_key.range::<str, _>(..),
    };
    let mut items = Vec::with_capacity(limit);
    let mut has_more = false;
    for (key, slot) in range {
        if items.len() == limit {
            has_more = true;
            break;
        }
        items.push(world.truth_item(key, *slot));
    }
    Json(json!({"items": items, "has_more": has_more})).into_response()
}

async fn stats(State(mock): State<Arc<Mock>>) -> Response {
    let world = mock.lock();
    let mut value = serde_json::to_value(&world.stats).unwrap_or_default();
    value["finished"] = json!(world.finished());
    value["visible"] = json!(world.listing.len());
    value["pending_visibility"] = json!(world.pending.len());
    value["paused"] = json!(world.paused);
    Json(value).into_response()
}

async fn get_faults(State(mock): State<Arc<Mock>>) -> Response {
    Json(mock.lock().knobs.clone()).into_response()
}

async fn put_faults(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let mut world = mock.lock();
    let updated: Knobs = match merge_patch(&world.knobs, &body) {
        Ok(k) => k,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    if let Err(e) = updated.validate() {
        return json_error(StatusCode::BAD_REQUEST, &e);
    }
    if updated.seed != world.knobs.seed {
        world.rng = fastrand::Rng::with_seed(updated.seed ^ 0x5eed);
    }
    world.knobs = updated;
    Json(world.knobs.clone()).into_response()
}

async fn pause(State(mock): State<Arc<Mock>>) -> Response {
    mock.lock().paused = true;
    Json(json!({"paused": true})).into_response()
}

async fn resume(State(mock): State<Arc<Mock>>) -> Response {
    let mut world = mock.lock();
    world.paused = false;
    world.carry = 0.0;
    Json(json!({"paused": false})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated record with an unknown procedure, written again unchanged (the merger test
    /// "touches" finished dossiers so), is still one the national portal refuses: the truth must
    /// not start counting it as valid.
    #[test]
    fn a_touched_record_keeps_its_unknown_procedure() {
        let knobs = Knobs {
            dossiers: 20,
            changes_per_second: 0.0,
            unknown_procedure_rate: 0.5,
            bad_record_rate: 0.0,
            seed: 7,
            ..Knobs::default()
        };
        let mut world = World::new(knobs, wall_clock());
        world.backfill_some(10_000);
        let items = truth_items(&world.truth());
        let unknown: Vec<&TruthItem> = items.iter().filter(|t| t.unknown_procedure).collect();
        let known = items.iter().find(|t| !t.unknown_procedure).expect("a known procedure");
        assert!(!unknown.is_empty());
        world.upsert_raw(unknown[0].record.clone(), 0);
        world.upsert_raw(known.record.clone(), 0);
        let after = truth_items(&world.truth());
        let flag = |key: &str| after.iter().find(|t| t.key == key).unwrap().unknown_procedure;
        assert!(flag(&unknown[0].key), "the touched record's procedure is still unknown");
        assert!(!flag(&known.key), "a known procedure stays known");
        assert_eq!(after.iter().filter(|t| t.unknown_procedure).count(), unknown.len());
    }
}
