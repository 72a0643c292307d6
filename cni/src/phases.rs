//! The time each phase of a CNI call took (pod lookup, network resolution, each delegate, the
//! sriov delegate's own steps, the status patch), collected for the agent's metrics and
//! `plexus-agent trace`. A call runs on one thread from start to end (the binary's, or a
//! blocking thread of the agent), so phases are gathered per thread: code deep in a delegate
//! records a phase without every layer passing a collector down. Outside [`collect`],
//! recording does nothing.

use std::cell::RefCell;
use std::time::{Duration, Instant};

thread_local! {
    static CURRENT: RefCell<Option<Vec<(String, Duration)>>> = const { RefCell::new(None) };
}

/// Runs `f`, returning what it returned and the phases recorded meanwhile, in order.
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Vec<(String, Duration)>) {
    let outer = CURRENT.with(|c| c.borrow_mut().replace(Vec::new()));
    let value = f();
    let phases = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer)).unwrap_or_default();
    (value, phases)
}

/// Records that phase `name` took `took`.
pub fn record(name: impl Into<String>, took: Duration) {
    CURRENT.with(|c| {
        if let Some(list) = c.borrow_mut().as_mut() {
            list.push((name.into(), took));
        }
    });
}

/// Times `f` as phase `name`.
pub fn timed<T>(name: impl Into<String>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = f();
    record(name, start.elapsed());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_collected_per_call_and_ignored_outside_one() {
        record("nobody listens", Duration::from_millis(1));
        let (value, phases) = collect(|| {
            timed("pod", || ());
            record("delegate a", Duration::from_millis(3));
            let ((), inner) = collect(|| record("inner", Duration::ZERO));
            assert_eq!(inner.len(), 1);
            7
        });
        assert_eq!(value, 7);
        let names: Vec<&str> = phases.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pod", "delegate a"]);
        assert_eq!(phases[1].1, Duration::from_millis(3));
    }
}
