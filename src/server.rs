//! Starts shards, handles signals, waits for shutdown.
