//! The kernel event listener on a real kernel: veths send link events (this machine's kernel
//! cannot make PCI devices; their uevents are parsed by the unit tests and carried by the
//! simulated node's socket in the device plugin's tests).
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use plexus_hw::events::{Event, EventSource, Listener};
use plexus_hw::netns::Netns;

/// Waits for a link event naming `name`; `what` says which, for the failure.
fn wait_for(rx: &mpsc::Receiver<Event>, name: &str, what: &str) -> Event {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) if matches!(&event, Event::Link { name: Some(n), .. } if n == name) => return event,
            Ok(_) => {}
            Err(e) => panic!("no link event for {name} ({what}): {e}"),
        }
    }
}

#[test]
fn the_kernel_listener_hears_a_veth_come_go_up_down_and_away() {
    let netns = Netns::create_unique("plexus-events").unwrap();
    let name = netns.name().unwrap().to_owned();
    let (tx, rx) = mpsc::channel();
    let listener = netns
        .run(move || {
            Listener::start(&EventSource::Kernel, move |event| {
                let _ = tx.send(event);
            })
        })
        .unwrap()
        .unwrap();
    let ns = Some(name.as_str());
    plexus_sim::ip::run(ns, &["link", "add", "pxev0", "type", "veth", "peer", "name", "pxev1"]).unwrap();
    wait_for(&rx, "pxev0", "made");
    let start = Instant::now();
    plexus_sim::ip::run(ns, &["link", "set", "pxev0", "up"]).unwrap();
    wait_for(&rx, "pxev0", "up");
    // An order of magnitude, not a benchmark: an event, not a poll tick.
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
    plexus_sim::ip::run(ns, &["link", "set", "pxev0", "down"]).unwrap();
    wait_for(&rx, "pxev0", "down");
    plexus_sim::ip::run(ns, &["link", "del", "pxev0"]).unwrap();
    loop {
        if let Event::Link { removed: true, .. } = wait_for(&rx, "pxev0", "removed") {
            break;
        }
    }
    // Stops when dropped; another namespace's links are not heard.
    drop(listener);
    Netns::delete_path(netns.path()).unwrap();
}
