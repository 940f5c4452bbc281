//! psfleet-sim: see docs/ARCHITECTURE.md. Built out by its own issue.
