//! PROXY protocol v2 (placeholder: written on the `proxy` branch).
