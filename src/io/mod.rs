//! Sockets and batched I/O. The only module allowed `unsafe`.
#![allow(unsafe_code)]
