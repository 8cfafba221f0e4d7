//! `nuaged`: the nuage host daemon (see [`nuage::daemon`]). Runs on its embedded defaults;
//! `--config FILE` (JSON) and the flags below override them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use nuage::api::audit::parse_fingerprint;
use nuage::api::metrics::{self, Access, ApiMetrics};
use nuage::api::server::{Controllers, Listeners};
use nuage::autoscaling::AutoScalingGroups;
use nuage::balancer::Balancers;
use nuage::daemon::config::DaemonConfig;
use nuage::daemon::config::TcpConfig;
use nuage::daemon::metadata::MetadataSource;
use nuage::daemon::Daemon;
use nuage::environments::Environments;
use nuage::metadata::token::TokenKey;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::info;

#[derive(Debug, Parser)]
#[command(name = "nuaged", version, about = "The nuage host daemon: an EC2-style API for this host")]
struct Args {
    /// A JSON file overriding the embedded defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where images, volumes, the database and instances live.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The API's Unix socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The group the API socket is given to (default: nuage, when it exists).
    #[arg(long)]
    socket_group: Option<String>,
    /// The nuage-vmm binary.
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// The nuage-lb binary (load balancers).
    #[arg(long)]
    balancer: Option<PathBuf>,
    /// Run the network plane (bridges, taps, firewall) in this named network namespace.
    #[arg(long)]
    netns: Option<String>,
    /// The LAN-facing interface that holds Elastic IPs.
    #[arg(long)]
    uplink: Option<String>,
    /// LAN addresses Elastic IPs are allocated from (comma-separated).
    #[arg(long, value_delimiter = ',')]
    address_pool: Vec<std::net::Ipv4Addr>,
    /// Seconds a stop gives the guest to shut down before its VMM is stopped.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Also serve the API on this TCP address, with mutual TLS (needs the three --tls-*).
    #[arg(long)]
    tcp_listen: Option<std::net::SocketAddr>,
    /// The daemon's certificate chain (PEM), for --tcp-listen.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs the certificates clients must present.
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Client certificates (SHA-1 fingerprints, comma-separated) that may only read.
    #[arg(long, value_delimiter = ',')]
    tls_read_only_client: Vec<String>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Colours only for a terminal: a log file (the usual place) stays plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(args.log_level.as_str())
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(path) => DaemonConfig::from_file(path)?,
        None => DaemonConfig::default(),
    };
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    if let Some(group) = args.socket_group {
        config.socket_group = group;
    }
    if let Some(vmm) = args.vmm {
        config.vmm = vmm;
    }
    if let Some(balancer) = args.balancer {
        config.balancer = balancer;
    }
    if let Some(netns) = args.netns {
        config.network.netns = Some(netns);
    }
    if let Some(uplink) = args.uplink {
        config.network.uplink = Some(uplink);
    }
    if let Some(seconds) = args.stop_timeout {
        config.stop_timeout_secs = seconds;
    }
    if let Some(address) = args.tcp_listen {
        let (Some(cert), Some(key), Some(client_ca)) = (args.tls_cert, args.tls_key, args.tls_client_ca)
        else {
            anyhow::bail!(
                "--tcp-listen needs --tls-cert, --tls-key and --tls-client-ca: over TCP the API is served \
                 with mutual TLS only"
            );
        };
        config.tcp =
            Some(TcpConfig { address, cert, key, client_ca, read_only_clients: args.tls_read_only_client });
    }
    if args.metrics_address.is_some() {
        config.metrics_address = args.metrics_address;
    }
    if !args.address_pool.is_empty() {
        config.network.address_pool = args.address_pool;
    }
    let socket = config.socket.clone();
    let socket_group = config.socket_group.clone();
    let read_only_socket = config.read_only_socket();
    let read_only_group = config.read_only_socket_group.clone();
    let metrics_address = config.metrics_address;
    // Certificates are read before anything else starts, so a bad one fails fast.
    let tcp = config.tcp.as_ref().map(tls_config).transpose()?;
    let (daemon, recovered) = tokio::task::spawn_blocking(move || Daemon::open(config))
        .await?
        .context("opening the daemon's state")?;
    for action in recovered {
        info!("recovery: {action}");
    }
    let daemon = Arc::new(daemon);
    let balancers = Arc::new(Balancers::new(daemon.documents.clone(), daemon.clone(), &daemon.config));
    balancers.start().context("starting the load balancers' controller")?;
    let groups = Arc::new(AutoScalingGroups::new(
        daemon.documents.clone(),
        daemon.clone(),
        balancers.clone(),
        &daemon.config.region,
    ));
    groups.start().context("starting the Auto Scaling groups' controller")?;
    let environments = Arc::new(Environments::new(
        daemon.documents.clone(),
        daemon.clone(),
        balancers.clone(),
        groups.clone(),
        &daemon.config.region,
    ));
    environments.start().context("starting the environments' controller")?;
    let key = TokenKey::load_or_create(&daemon.state_dir().join("metadata.key"))
        .context("the metadata service's token key")?;
    tokio::spawn(nuage::metadata::server::run(Arc::new(MetadataSource(daemon.clone())), Arc::new(key)));
    let api_metrics = Arc::new(ApiMetrics::default());
    if let Some(address) = metrics_address {
        let listener = metrics::bind(address).await?;
        info!(address = %listener.local_addr()?, "serving metrics");
        tokio::spawn(metrics::serve(listener, daemon.clone(), balancers.clone(), api_metrics.clone()));
    }
    let unix = nuage::api::server::bind(&socket, &socket_group)?;
    let read_only = nuage::api::server::bind(&read_only_socket, &read_only_group)?;
    info!(socket = %socket.display(), state_dir = %daemon.state_dir().display(), "serving the API");
    info!(socket = %read_only_socket.display(), "serving the API's reads");
    let tcp = match tcp {
        Some((address, tls, access)) => {
            let listener =
                tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
            info!(address = %listener.local_addr()?, "serving the API over TCP with mutual TLS");
            Some((listener, tls, access))
        }
        None => None,
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        info!("stopping; instances keep running and are adopted at the next start");
    };
    let controllers = Controllers { balancers, groups, environments };
    nuage::api::server::serve(daemon, controllers, Listeners { unix, read_only, tcp }, api_metrics, shutdown)
        .await
}

/// The TLS settings of the TCP listener: the daemon's identity, the CA clients'
/// certificates must chain to, and which of those certificates may only read.
fn tls_config(tcp: &TcpConfig) -> anyhow::Result<(std::net::SocketAddr, ServerTlsConfig, Access)> {
    let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let identity = Identity::from_pem(read(&tcp.cert)?, read(&tcp.key)?);
    let tls = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(Certificate::from_pem(read(&tcp.client_ca)?));
    let read_only =
        tcp.read_only_clients.iter().map(|text| parse_fingerprint(text)).collect::<Result<_, _>>();
    let read_only = read_only.map_err(|e| anyhow::anyhow!("tcp.read_only_clients: {e}"))?;
    Ok((tcp.address, tls, Access::ReadOnlyCertificates(Arc::new(read_only))))
}
