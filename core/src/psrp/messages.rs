//! Typed PSRP messages.
