//! Starting simulated fleets from tests without address clashes.
//!
//! Integration tests run in parallel threads, and other checkouts of the project may run
//! their tests on the same machine at the same time; every fleet therefore gets a fresh block
//! of 127.0.0.0/8 addresses, and a block that is already bound is skipped.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use psfleet_sim::fleet::{Fleet, FleetError, FleetHandle, FleetOptions};

/// Addresses handed out so far in this process (offsets from the process's base address).
static NEXT_OFFSET: AtomicU32 = AtomicU32::new(0);

/// The host names `options` will give its hosts. They do not depend on the addresses the
/// fleet gets, so a realm can have an `HTTP/<name>` service for each before it starts.
pub fn planned_names(options: &FleetOptions) -> Vec<String> {
    let accounts = psfleet_sim::profile::default_accounts(options.seed);
    options
        .profile
        .plan(&psfleet_sim::profile::PlanOptions {
            hosts: options.hosts,
            seed: options.seed,
            first_address: options.first_address,
            latency: None,
            accounts: &accounts,
        })
        .expect("the test profile plans")
        .into_iter()
        .map(|h| h.spec.name)
        .collect()
}

/// Starts `options` on a free block of loopback addresses (its `first_address` is replaced).
pub async fn start(mut options: FleetOptions) -> FleetHandle {
    let hosts = u32::try_from(options.hosts).expect("host count fits u32");
    // Blocks start on a /24 boundary and leave a gap, so fleets never share a /24.
    let span = (hosts / 256 + 2) * 256;
    // 127.100.0.0 .. 127.250.255.255 is for tests; the simulator's default is 127.20.0.1.
    let base = u32::from(Ipv4Addr::new(127, 100, 0, 0));
    let range = u32::from(Ipv4Addr::new(127, 250, 0, 0)) - base;
    let process_start =
        (std::process::id().wrapping_mul(2_654_435_761) % (range / 65_536)) * 65_536;
    let mut last_error = None;
    for attempt in 0..32u32 {
        let offset = NEXT_OFFSET.fetch_add(span, Ordering::Relaxed);
        // After a clash, jump to another part of the range (another process holds this one).
        let jump = attempt.wrapping_mul(7_919 * 65_536);
        let first = base + (process_start + offset + jump) % (range - span) + 1;
        options.first_address = Ipv4Addr::from(first);
        match Fleet::start(options.clone()).await {
            Ok(fleet) => return fleet,
            Err(error @ FleetError::Bind { .. }) => last_error = Some(error),
            Err(error) => panic!("simulated fleet failed to start: {error}"),
        }
    }
    panic!("no free loopback block for a simulated fleet: {last_error:?}");
}
