//! The bodies the poller has just recorded, handed to the pusher in memory.
//!
//! Every dossier the poller records is due at once, and the pusher's next round loads it:
//! reading it from the database means decompressing, checking and splitting again the JSON
//! the poller serialised a moment before, a large share of a backfill's CPU.
//! The poller leaves each body here once its transaction is committed; the pusher takes it
//! when the row it loads is the same version with the same payload (a catalogue fill changes
//! the payload's hash), and reads the database otherwise. The database stays the truth: this
//! only saves reading back what was just written.
//!
//! Bounded by bytes: when the poller runs ahead of the pusher, the oldest go first (the
//! pusher reads those from the database, as it always could).

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use serde_json::value::RawValue;

/// What the cache holds at most: about a thousand dossiers of the simulator's size, two of
/// the poller's pages, while a pusher round takes 1,600.
pub(crate) const MAX_BYTES: usize = 2 * 1024 * 1024;

/// One dossier's body as it was stored.
#[derive(Debug)]
pub(crate) struct Body {
    pub version: i64,
    pub payload_hash: i64,
    pub payload: Box<RawValue>,
    pub history: Vec<Box<RawValue>>,
}

impl Body {
    fn bytes(&self) -> usize {
        self.payload.get().len() + self.history.iter().map(|e| e.get().len() + 16).sum::<usize>() + 64
    }
}

#[derive(Default)]
struct Held {
    /// Each body with the number of its arrival.
    bodies: HashMap<String, (u64, Body)>,
    /// Arrival order, for eviction: entries whose body was taken or replaced since are
    /// skipped, and swept out once they outnumber the bodies.
    order: VecDeque<(String, u64)>,
    arrivals: u64,
    bytes: usize,
}

/// The cache (see the module's comment).
pub(crate) struct FreshBodies {
    held: Mutex<Held>,
    max_bytes: usize,
}

impl Default for FreshBodies {
    fn default() -> FreshBodies {
        FreshBodies::with_capacity(MAX_BYTES)
    }
}

impl FreshBodies {
    pub(crate) fn with_capacity(max_bytes: usize) -> FreshBodies {
        FreshBodies { held: Mutex::new(Held::default()), max_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the body just committed for `mahoso` (replacing an older one).
    pub(crate) fn put(&self, mahoso: String, body: Body) {
        let size = body.bytes();
        if size > self.max_bytes {
            return;
        }
        let mut held = self.lock();
        held.arrivals += 1;
        let arrival = held.arrivals;
        if let Some((_, old)) = held.bodies.insert(mahoso.clone(), (arrival, body)) {
            held.bytes -= old.bytes();
        }
        held.order.push_back((mahoso, arrival));
        held.bytes += size;
        while held.bytes > self.max_bytes {
            let Some((oldest, arrival)) = held.order.pop_front() else { break };
            if held.bodies.get(&oldest).is_some_and(|(a, _)| *a == arrival)
                && let Some((_, old)) = held.bodies.remove(&oldest)
            {
                held.bytes -= old.bytes();
            }
        }
        if held.order.len() > 2 * held.bodies.len() + 64 {
            let Held { bodies, order, .. } = &mut *held;
            order.retain(|(name, arrival)| bodies.get(name).is_some_and(|(a, _)| a == arrival));
        }
    }

    /// The body of `mahoso` if it is this version with this payload; taken either way (a
    /// body that does not match is stale).
    pub(crate) fn take(&self, mahoso: &str, version: i64, payload_hash: i64) -> Option<Body> {
        let mut held = self.lock();
        let (_, body) = held.bodies.remove(mahoso)?;
        held.bytes -= body.bytes();
        (body.version == version && body.payload_hash == payload_hash).then_some(body)
    }

    /// How many bodies are held, and how long the arrival order is (tests).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let held = self.lock();
        (held.bodies.len(), held.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(version: i64, size: usize) -> Body {
        Body {
            version,
            payload_hash: version * 10,
            payload: serde_json::value::to_raw_value(&"x".repeat(size)).unwrap(),
            history: vec![serde_json::value::to_raw_value(&version).unwrap()],
        }
    }

    #[test]
    fn a_body_is_taken_once_and_only_for_its_version_and_payload() {
        let fresh = FreshBodies::default();
        fresh.put("A".into(), body(1, 10));
        fresh.put("A".into(), body(2, 10));
        assert_eq!(fresh.sizes().0, 1, "a newer version replaces the older");
        assert!(fresh.take("A", 1, 10).is_none(), "an older version does not match, and is dropped");
        assert!(fresh.take("A", 2, 20).is_none(), "gone once taken");
        fresh.put("B".into(), body(3, 10));
        assert!(fresh.take("B", 3, 999).is_none(), "another payload (a catalogue fill) does not match");
        fresh.put("C".into(), body(4, 10));
        let c = fresh.take("C", 4, 40).expect("the same version and payload");
        assert_eq!(c.history[0].get(), "4");
    }

    #[test]
    fn the_oldest_go_first_past_the_bound() {
        let fresh = FreshBodies::with_capacity(1_000);
        for (i, name) in ["A", "B", "C", "D"].into_iter().enumerate() {
            fresh.put(name.into(), body(i as i64, 300));
        }
        assert!(fresh.take("A", 0, 0).is_none(), "evicted");
        assert!(fresh.take("D", 3, 30).is_some(), "the newest kept");
        fresh.put("E".into(), body(5, 5_000));
        assert!(fresh.take("E", 5, 50).is_none(), "a body larger than the whole bound is not kept");
    }

    #[test]
    fn bodies_taken_leave_no_trace_behind() {
        let fresh = FreshBodies::default();
        fresh.put("never taken".into(), body(0, 10));
        for i in 0..10_000 {
            fresh.put(format!("D{i}"), body(i, 10));
            assert!(fresh.take(&format!("D{i}"), i, i * 10).is_some());
        }
        let (bodies, order) = fresh.sizes();
        assert_eq!(bodies, 1);
        assert!(order <= 2 * bodies + 65, "the arrival order is swept: {order}");
    }
}
