//! One worker thread: wires a `turn::Relay` to an `io` backend.
