//! The run flags. Each overrides the matching key of the configuration
//! file; a repeatable flag given at least once replaces the file's whole
//! list. (The subcommands and the top-level parser are in `crate::cli`.)

use std::path::PathBuf;

use clap::Args;

#[derive(Clone, Debug, Default, Args)]
pub struct RunArgs {
    /// TOML configuration file (see uturn.example.toml). [default: none]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// UDP address to serve clients on (see `help` for the text shown).
    #[arg(
        long,
        value_name = "ADDR:PORT",
        help = "UDP address to serve clients on, IP:PORT or [IPv6]:PORT; port 0 picks a free \
                port, the same for every worker. Repeatable. [default: 127.0.0.1:3478]"
    )]
    pub listen: Vec<String>,

    /// TCP address to serve TURN over TCP on (see `help` for the text shown).
    #[arg(
        long = "listen-tcp",
        value_name = "ADDR:PORT",
        help = "TCP address to serve TURN over TCP on (RFC 8656 §3.1; clients behind firewalls \
                that drop UDP). Repeatable; replaces the file's list. [default: the --listen \
                addresses]"
    )]
    pub listen_tcp: Vec<String>,

    /// TCP address to serve TURN over TLS on (see `help` for the text shown).
    #[arg(
        long = "listen-tls",
        value_name = "ADDR:PORT",
        help = "TCP address to serve TURN over TLS on (turns:; 443 gets through most \
                firewalls); needs --tls-cert and --tls-key. Repeatable. [default: none; the demo \
                start without credentials listens on the first listen IP, port 5349, with a \
                self-signed certificate]"
    )]
    pub listen_tls: Vec<String>,

    #[arg(
        long = "listen-dtls",
        value_name = "ADDR:PORT",
        help = "UDP address to serve TURN over DTLS on (RFC 7350; DTLS 1.2, the TLS \
                certificate); needs --tls-cert and --tls-key. Repeatable. [default: none; the \
                demo start without credentials listens on the first listen IP, UDP port 5349]"
    )]
    pub listen_dtls: Vec<String>,

    /// PEM certificate chain for TLS listeners, leaf first. Re-read on reload: new
    /// connections get the new certificate. [default: none]
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1). Keep it 0600 or 0640.
    /// [default: none]
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// A --listen-tcp or --listen-tls address whose connections start with a PROXY
    /// protocol v2 header (a load balancer in front); the client address used for
    /// nonces, quotas, rate limits and logs is then the header's. Repeatable.
    /// [default: none]
    #[arg(long = "proxy-protocol", value_name = "ADDR:PORT")]
    pub proxy_protocol: Vec<String>,

    /// Networks (CIDR) of the load balancers allowed to connect to --proxy-protocol
    /// listeners; any other source is refused. Repeatable. [default: none]
    #[arg(long = "proxy-protocol-from", value_name = "CIDR")]
    pub proxy_protocol_from: Vec<String>,

    /// Address relayed transport addresses are allocated on (and given to clients);
    /// at most one IPv4 and one IPv6. Repeatable. [default: the listen address, when
    /// it is not a wildcard]
    #[arg(long = "relay-ip", value_name = "IP")]
    pub relay_ip: Vec<String>,

    /// UDP port range for relayed addresses, inclusive, split evenly between
    /// workers. [default: 49152-65535]
    #[arg(long, value_name = "LOW-HIGH")]
    pub relay_ports: Option<String>,

    /// Realm of the long-term credentials. [default: uturn.local]
    #[arg(long, value_name = "R")]
    pub realm: Option<String>,

    /// A static user for lab use, NAME:PASSWORD; the keys are derived in memory at
    /// start-up. Configuration files hold derived keys instead (`uturn derive-key`).
    /// Visible in the process list. Repeatable; replaces the file's users entries.
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub user: Vec<String>,

    /// TURN REST API shared secret (see `help` for the text shown).
    #[arg(
        long = "rest-secret",
        value_name = "S",
        help = "TURN REST API shared secret (username \"<unix-expiry>[:<id>]\", password \
                base64(HMAC-SHA1(secret, username))). Visible in the process list; files can use \
                rest_secret_files. Repeatable; replaces the file's secrets."
    )]
    pub rest_secret: Vec<String>,

    /// Peer addresses clients may relay to although the built-in deny list (private,
    /// loopback, link-local…) or the relay's own addresses cover them, as CIDR (or a
    /// single IP). Allow beats deny. Repeatable. [default: none]
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peer: Vec<String>,

    /// Peer addresses to refuse in addition to the built-in deny list, as CIDR (or a
    /// single IP). Repeatable. [default: none]
    #[arg(long = "deny-peer", value_name = "CIDR")]
    pub deny_peer: Vec<String>,

    /// Worker threads, one per core, each with its own sockets. [default: number of
    /// CPUs available]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Longest allocation lifetime granted, in seconds; a client that asks for none
    /// gets RFC 8656's 600 s (or this, if lower). [default: 3600]
    #[arg(long, value_name = "SECS")]
    pub max_lifetime: Option<u64>,

    /// Data-plane io backend: uring (io_uring; start-up fails if the kernel does not
    /// offer it), syscall (portable epoll + recvmmsg/sendmmsg) or auto (io_uring when it
    /// works, else syscall, said in one log line). [default: auto]
    #[arg(long, value_name = "uring|syscall|auto")]
    pub io_backend: Option<String>,

    /// io_uring only: under load (a wake-up that brought two or more datagrams), let
    /// a worker sleep until 32 datagrams wait or this many microseconds pass, instead
    /// of waking for each. Fewer wake-ups per packet, at most this much added delay;
    /// 0 turns it off. [default: 0]
    #[arg(long, value_name = "USECS")]
    pub io_batch_wait: Option<u64>,

    /// io_uring only: send a run of same-size datagrams from one socket to one
    /// destination (a burst of media to one client or peer) as one UDP GSO send;
    /// the kernel splits it back into the same datagrams. [default: true]
    #[arg(long, value_name = "true|false")]
    pub io_gso: Option<bool>,

    /// io_uring only: serve TCP and TLS on the ring (native: multishot accept and
    /// receive, ring sends; start-up fails if the kernel refuses them), through an
    /// epoll instance the ring polls (epoll), or auto (native when a start-up probe
    /// finds it works, else epoll, said in one log line). [default: auto]
    #[arg(long, value_name = "native|epoll|auto")]
    pub io_streams: Option<String>,

    /// The XDP fast path: forward ChannelData of bound channels in the network
    /// driver, without the socket path (see the README's XDP section). off; auto
    /// (attach where possible, else one log line says why and sockets carry
    /// everything); required (start-up fails, exit 2, unless attached to every
    /// --xdp-interface). Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN. [default: off]
    #[arg(long, value_name = "off|auto|required")]
    pub xdp: Option<String>,

    /// An interface clients or peers reach this relay on, for the XDP program
    /// (repeat for each; replaces the file's xdp_interfaces).
    #[arg(long, value_name = "NAME")]
    pub xdp_interface: Vec<String>,

    /// Bound channels the XDP maps hold; channels beyond stay on the socket path.
    /// [default: 65536]
    #[arg(long, value_name = "N")]
    pub xdp_routes: Option<u64>,

    /// Accept generic (SKB) mode XDP on interfaces whose driver has no native XDP:
    /// it works everywhere but saves far less. [default: false]
    #[arg(long, value_name = "true|false")]
    pub xdp_generic: Option<bool>,

    /// Log level: trace, debug, info, warn, error or off (or a filter such as
    /// uturn=debug). Overrides RUST_LOG, which overrides the file. Logs go to
    /// standard error. [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log line format on standard error: text (for people) or json (one object per
    /// line, for a log pipeline). [default: text]
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,

    /// Let usernames and client and peer addresses appear in logs. Off, they are
    /// written as "<redacted>". [default: off]
    #[arg(long)]
    pub log_client_details: bool,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics. Keep it on loopback (or
    /// a management network): it is unauthenticated. [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,

    /// Unix socket for `uturn reload` (created mode 0600; the directory must exist).
    /// [default: off]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// On SIGTERM/SIGINT, refuse new allocations and keep serving the existing ones
    /// for at most this many seconds, then exit; 0 exits at once. A second signal
    /// exits at once. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,

    /// While draining, answer new Allocate requests with 300 (Try Alternate) and this
    /// server in ALTERNATE-SERVER instead of 508 (clients of the other address family
    /// still get 508). [default: none]
    #[arg(long, value_name = "ADDR:PORT")]
    pub alternate_server: Option<String>,
}
