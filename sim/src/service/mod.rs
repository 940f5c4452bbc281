//! The WS-Man service of one simulated host: what happens to an authenticated, decrypted SOAP
//! request. Synchronous and clock-free: the network layer passes the times in and does the
//! waiting, so the service is testable without sockets.
//!
//! Contract with the network layer (`server`):
//! - the network layer authenticates, decrypts, applies latency, flakiness and the
//!   MaxEnvelopeSizekb check (HTTP 413), and answers unauthenticated Identify itself through
//!   [`HostService::identify`];
//! - it calls [`HostService::handle`] with the canonical account name and the plaintext body;
//! - on [`ServiceReply::WaitUntil`] it sleeps until that time (measured on the same clock as
//!   `now`) and calls `handle` again with the same request and a later `now`; the service answers
//!   the WS-Man TimedOut fault itself once `received_at + OperationTimeout` has passed.

use std::sync::Arc;
use std::time::Duration;

use crate::host::HostSpec;

/// One authenticated request to the service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceRequest<'a> {
    /// The canonical account name the request authenticated as.
    pub user: &'a str,
    /// The plaintext SOAP envelope.
    pub body: &'a [u8],
    /// When the request arrived (time since the fleet started).
    pub received_at: Duration,
    /// Now (time since the fleet started).
    pub now: Duration,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceReply {
    /// Send this status and SOAP body (the network layer seals it when the session is
    /// encrypted).
    Respond {
        /// HTTP status (200, or 500 for faults).
        status: u16,
        /// The SOAP envelope.
        body: Vec<u8>,
    },
    /// Nothing is ready yet: call `handle` again at this time.
    WaitUntil(Duration),
}

/// The WS-Man service of one host; shared by all connections to it.
#[derive(Debug)]
pub struct HostService {
    spec: Arc<HostSpec>,
}

impl HostService {
    /// A service with no open shells.
    pub fn new(spec: Arc<HostSpec>) -> Self {
        Self { spec }
    }

    /// The host this service simulates.
    pub fn spec(&self) -> &HostSpec {
        &self.spec
    }

    /// The Identify response body (unauthenticated and authenticated Identify share it).
    pub fn identify(&self) -> Vec<u8> {
        psfleet_core::wsman::IdentifyResponse::new(
            self.spec.os.identify_product_version.clone(),
            vec![
                "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/http/spnego-kerberos"
                    .to_owned(),
            ],
        )
        .to_xml()
    }

    /// Handles one authenticated request.
    pub fn handle(&self, request: &ServiceRequest<'_>) -> ServiceReply {
        // Placeholder until the service lands: every operation is refused as the WinRM
        // service refuses an action it does not support.
        let _ = request;
        let fault = psfleet_core::wsman::WsmanFault::invalid_resource_uri(
            self.spec.name.clone(),
            "unsupported",
        );
        ServiceReply::Respond {
            status: 500,
            body: fault_envelope(fault),
        }
    }
}

fn fault_envelope(fault: psfleet_core::wsman::WsmanFault) -> Vec<u8> {
    psfleet_core::wsman::Response::reply(
        uuid::Uuid::nil(),
        uuid::Uuid::nil(),
        psfleet_core::wsman::ResponseBody::Fault(fault),
    )
    .to_xml()
}
