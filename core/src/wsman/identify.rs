//! `wsmid:Identify` (MS-WSMV 3.1.4.1.23; wire-facts 2.2): the one request without
//! WS-Addressing headers. It is answered unauthenticated when the HTTP request carries
//! `WSMANIDENTIFY: unauthenticated`; that reply has no `wsmid:SecurityProfiles`.

use super::WsmanError;
use super::fault::{FaultAction, WsmanFault};
use super::names::ns;
use super::request::Request;
use super::util::{self, child_text, write_opt};
use crate::xml::{self, XmlWriter};

/// An Identify request (it has no parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentifyRequest;

/// A parsed client message: either an Identify or a regular request. Lets a server read a
/// POST body with one tree parse whatever it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `wsmid:Identify`.
    Identify(IdentifyRequest),
    /// Any other request.
    Request(Box<Request>),
}

/// The reply to Identify.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyResponse {
    /// `wsmid:ProtocolVersion` (see [`super::resources::PROTOCOL_VERSION`]).
    pub protocol_version: Option<String>,
    /// `wsmid:ProductVendor` (`Microsoft Corporation`).
    pub product_vendor: Option<String>,
    /// `wsmid:ProductVersion`, e.g. `OS: 10.0.14393 SP: 0.0 Stack: 3.0`.
    pub product_version: Option<String>,
    /// `wsmid:SecurityProfiles/wsmid:SecurityProfileName`; `None` when the element is
    /// absent (the unauthenticated form).
    pub security_profiles: Option<Vec<String>>,
}

impl IdentifyRequest {
    /// `<s:Envelope><s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>`.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut w = XmlWriter::with_capacity(256);
        w.start(
            "s:Envelope",
            &[("xmlns:s", ns::SOAP), ("xmlns:wsmid", ns::IDENTITY)],
        );
        w.empty("s:Header", &[]);
        w.start("s:Body", &[]);
        w.empty("wsmid:Identify", &[]);
        w.end("s:Body");
        w.end("s:Envelope");
        w.into_bytes()
    }

    /// Parses an Identify request; any other body is [`WsmanError::UnexpectedBody`].
    pub fn parse(bytes: &[u8]) -> Result<Self, WsmanError> {
        let root = xml::parse(bytes)?;
        let env = util::envelope(&root)?;
        if env.body.child(ns::IDENTITY, "Identify").is_some() {
            Ok(IdentifyRequest)
        } else {
            Err(WsmanError::UnexpectedBody {
                action: "wsmid:Identify".to_owned(),
                found: util::describe_first(env.body),
            })
        }
    }
}

impl ClientMessage {
    /// Parses a request body of either kind.
    pub fn parse(bytes: &[u8]) -> Result<Self, WsmanError> {
        let root = xml::parse(bytes)?;
        let env = util::envelope(&root)?;
        if env.body.child(ns::IDENTITY, "Identify").is_some() {
            return Ok(ClientMessage::Identify(IdentifyRequest));
        }
        Ok(ClientMessage::Request(Box::new(Request::from_root(&root)?)))
    }
}

impl IdentifyResponse {
    /// An authenticated Windows reply.
    pub fn new(product_version: impl Into<String>, security_profiles: Vec<String>) -> Self {
        Self {
            protocol_version: Some(super::resources::PROTOCOL_VERSION.to_owned()),
            product_vendor: Some("Microsoft Corporation".to_owned()),
            product_version: Some(product_version.into()),
            security_profiles: Some(security_profiles),
        }
    }

    /// Writes the reply as Windows does: empty header, `wsmid` declared on the response.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut w = XmlWriter::with_capacity(1024);
        w.start(
            "s:Envelope",
            &[("xml:lang", "en-US"), ("xmlns:s", ns::SOAP)],
        );
        w.empty("s:Header", &[]);
        w.start("s:Body", &[]);
        w.start("wsmid:IdentifyResponse", &[("xmlns:wsmid", ns::IDENTITY)]);
        write_opt(
            &mut w,
            "wsmid:ProtocolVersion",
            self.protocol_version.as_deref(),
        );
        write_opt(
            &mut w,
            "wsmid:ProductVendor",
            self.product_vendor.as_deref(),
        );
        write_opt(
            &mut w,
            "wsmid:ProductVersion",
            self.product_version.as_deref(),
        );
        if let Some(profiles) = &self.security_profiles {
            w.start("wsmid:SecurityProfiles", &[]);
            for p in profiles {
                w.text_element("wsmid:SecurityProfileName", &[], p);
            }
            w.end("wsmid:SecurityProfiles");
        }
        w.end("wsmid:IdentifyResponse");
        w.end("s:Body");
        w.end("s:Envelope");
        w.into_bytes()
    }

    /// Parses a reply; a SOAP fault becomes [`WsmanError::Fault`].
    pub fn parse(bytes: &[u8]) -> Result<Self, WsmanError> {
        let root = xml::parse(bytes)?;
        let env = util::envelope(&root)?;
        if let Some(fault) = env.body.child(ns::SOAP, "Fault") {
            return Err(WsmanError::Fault(Box::new(WsmanFault::parse(
                fault,
                FaultAction::Wsman,
            )?)));
        }
        let r = env
            .body
            .child(ns::IDENTITY, "IdentifyResponse")
            .ok_or_else(|| WsmanError::UnexpectedBody {
                action: "wsmid:Identify".to_owned(),
                found: util::describe_first(env.body),
            })?;
        Ok(Self {
            protocol_version: child_text(r, ns::IDENTITY, "ProtocolVersion"),
            product_vendor: child_text(r, ns::IDENTITY, "ProductVendor"),
            product_version: child_text(r, ns::IDENTITY, "ProductVersion"),
            security_profiles: r.child(ns::IDENTITY, "SecurityProfiles").map(|p| {
                p.children_named(ns::IDENTITY, "SecurityProfileName")
                    .map(|n| n.text().into_owned())
                    .collect()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsman::resources;

    #[test]
    fn identify_request_round_trips_and_is_told_apart() {
        let bytes = IdentifyRequest.to_xml();
        assert_eq!(IdentifyRequest::parse(&bytes), Ok(IdentifyRequest));
        assert_eq!(
            ClientMessage::parse(&bytes),
            Ok(ClientMessage::Identify(IdentifyRequest))
        );
        let root = xml::parse(&bytes).unwrap();
        assert!(
            root.path(&[(ns::SOAP, "Header")])
                .unwrap()
                .children
                .is_empty()
        );
        let request = Request::new(
            crate::wsman::RequestHeader::new(
                crate::wsman::Action::Get,
                "http://h:5985/wsman",
                resources::CONFIG,
                uuid::Uuid::from_u128(1),
            ),
            crate::wsman::RequestBody::Get,
        );
        assert_eq!(
            ClientMessage::parse(&request.to_xml()),
            Ok(ClientMessage::Request(Box::new(request.clone())))
        );
        assert!(matches!(
            IdentifyRequest::parse(&request.to_xml()),
            Err(WsmanError::UnexpectedBody { .. })
        ));
    }

    #[test]
    fn identify_responses_round_trip() {
        let authenticated = IdentifyResponse::new(
            "OS: 10.0.14393 SP: 0.0 Stack: 3.0",
            vec![
                resources::SECURITY_PROFILE_HTTP_BASIC.to_owned(),
                resources::SECURITY_PROFILE_HTTP_SPNEGO_KERBEROS.to_owned(),
            ],
        );
        assert_eq!(
            IdentifyResponse::parse(&authenticated.to_xml()),
            Ok(authenticated.clone())
        );
        let anonymous = IdentifyResponse {
            security_profiles: None,
            ..authenticated
        };
        let text = String::from_utf8(anonymous.to_xml()).unwrap();
        assert!(!text.contains("SecurityProfiles"));
        assert_eq!(IdentifyResponse::parse(text.as_bytes()), Ok(anonymous));
    }

    #[test]
    fn identify_fault_is_an_error() {
        let fault = crate::wsman::Response::reply(
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            crate::wsman::ResponseBody::Fault(WsmanFault::access_denied("h")),
        );
        match IdentifyResponse::parse(&fault.to_xml()) {
            Err(WsmanError::Fault(f)) => assert!(f.is_access_denied()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            IdentifyResponse::parse(b"<x/>"),
            Err(WsmanError::NotAnEnvelope { .. })
        ));
    }
}
