//! Configuration (TOML file + command-line flags), validated up front.
