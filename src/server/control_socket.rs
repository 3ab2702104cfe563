//! The control socket (`control_socket = PATH`): a unix stream socket,
//! mode 0600, on which `uturn reload` and `uturn status` ask the running
//! server for something and hear the outcome.
//!
//! The protocol is one request line (`reload` or `status`), then a reply
//! (`ok <text>` or `error <text>`, possibly several lines: a configuration
//! error quotes the file) up to the server closing the connection. Only the
//! owner of the socket file (and root) can connect.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::Event;

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request waits for the main thread (a reload reads files).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request line read.
const MAX_LINE: u64 = 64;

pub(crate) struct ControlSocket {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlSocket {
    /// Binds `path` (replacing a stale socket left by a previous run, never
    /// another kind of file) and serves it on a thread of its own.
    pub(crate) fn bind(path: &Path, events: Sender<Event>) -> io::Result<ControlSocket> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process is serving this socket",
                    ));
                }
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("uturn-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(stream) => serve(stream, &events),
                        Err(e) => tracing::debug!(error = %e, "control socket accept failed"),
                    }
                }
            })?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            stopping,
            thread: Some(thread),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file.
    pub(crate) fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept with a connection of our own.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, events: &Sender<Event>) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let mut line = String::new();
    let read = match stream.try_clone() {
        Ok(r) => BufReader::new(r.take(MAX_LINE)).read_line(&mut line),
        Err(e) => Err(e),
    };
    let reply = match read {
        Ok(_) => answer(line.trim(), events),
        Err(e) => format!("error cannot read the request: {e}"),
    };
    let mut stream = stream;
    let _ = stream.write_all(format!("{reply}\n").as_bytes());
}

fn answer(request: &str, events: &Sender<Event>) -> String {
    let reply = match request {
        "reload" => ask_main(events, |tx| Event::Reload {
            by: "control socket",
            reply: Some(tx),
        }),
        "status" => ask_main(events, Event::Status),
        other => Err(format!(
            "unknown request {:?}: expected reload or status",
            other.chars().take(32).collect::<String>()
        )),
    };
    match reply {
        Ok(text) => format!("ok {text}"),
        Err(e) => format!("error {e}"),
    }
}

/// Hands the main thread the event `make` builds around a reply channel,
/// and waits for its answer.
fn ask_main(
    events: &Sender<Event>,
    make: impl FnOnce(Sender<Result<String, String>>) -> Event,
) -> Result<String, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if events.try_send(make(tx)).is_err() {
        return Err("the server is busy; try again".to_string());
    }
    rx.recv_timeout(ANSWER_TIMEOUT)
        .unwrap_or_else(|_| Err("no answer from the server".to_string()))
}

/// Longest reply read by `ask`.
const MAX_REPLY: u64 = 64 * 1024;

/// The client side (`uturn reload`, `uturn status`): sends `request`,
/// returns the reply.
pub fn ask(path: &Path, request: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT + Duration::from_secs(5)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut reply = String::new();
    s.take(MAX_REPLY).read_to_string(&mut reply)?;
    if reply.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection without answering",
        ));
    }
    Ok(reply.trim_end().to_string())
}
