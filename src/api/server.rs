//! Serving the API on a Unix socket, and connecting to it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::server::Router;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity, Server, ServerTlsConfig, Uri,
};
use tower::layer::util::{Identity, Stack};

use super::addresses::AddressesService;
use super::autoscaling::AutoScalingService;
use super::balancing::LoadBalancingService;
use super::environments::{EnvironmentsService, MAX_REQUEST_BYTES};
use super::images::ImagesService;
use super::instances::InstancesService;
use super::keypairs::KeyPairsService;
use super::launch_templates::LaunchTemplatesService;
use super::metrics::{Access, ApiMetrics, CallLayer};
use super::pb::addresses_server::AddressesServer;
use super::pb::auto_scaling_server::AutoScalingServer;
use super::pb::environments_server::EnvironmentsServer;
use super::pb::images_server::ImagesServer;
use super::pb::instances_server::InstancesServer;
use super::pb::key_pairs_server::KeyPairsServer;
use super::pb::launch_templates_server::LaunchTemplatesServer;
use super::pb::load_balancing_server::LoadBalancingServer;
use super::pb::security_groups_server::SecurityGroupsServer;
use super::pb::snapshots_server::SnapshotsServer;
use super::pb::subnets_server::SubnetsServer;
use super::pb::tags_server::TagsServer;
use super::pb::volumes_server::VolumesServer;
use super::resources::TagsService;
use super::security_groups::SecurityGroupsService;
use super::subnets::SubnetsService;
use super::volumes::{SnapshotsService, VolumesService};
use crate::autoscaling::AutoScalingGroups;
use crate::balancer::Balancers;
use crate::daemon::Daemon;
use crate::environments::Environments;

/// Binds the API socket at `path` (mode 0660: the owner and its group may call the API),
/// replacing a stale socket a dead daemon left. The socket is handed to `group` (from
/// `/etc/group`) when that group exists, so its members may call the API.
pub fn bind(path: &Path, group: &str) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use: is another nuaged running?", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing the stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    match group_id(&groups, group) {
        Some(gid) => std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {group}", path.display()))?,
        None => tracing::info!(group, "no such group: the API socket keeps the daemon's group (create it to let its members call the API)"),
    }
    Ok(listener)
}

/// The id of group `name` in `groups` (the text of `/etc/group`).
fn group_id(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.nth(1)?.parse().ok()).flatten()
    })
}

/// Where the API is served: the Unix socket, its read-only twin, and optionally TCP with
/// mutual TLS.
pub struct Listeners {
    /// The local socket (its file mode decides who may call).
    pub unix: UnixListener,
    /// The local socket that serves reads only (for dashboards and monitoring).
    pub read_only: UnixListener,
    /// The TCP listener, its TLS settings (clients must present a certificate) and who
    /// of its callers may change something.
    pub tcp: Option<(TcpListener, ServerTlsConfig, Access)>,
}

/// The controllers beside the daemon whose services the API serves too.
#[derive(Clone)]
pub struct Controllers {
    /// Elastic Load Balancing.
    pub balancers: Arc<Balancers>,
    /// Auto Scaling groups.
    pub groups: Arc<AutoScalingGroups>,
    /// Elastic Beanstalk.
    pub environments: Arc<Environments>,
}

/// The layers every API call goes through.
type Layers = Stack<CallLayer, Identity>;

/// Every service on `server`: nuage's own, with the standard gRPC health (each reports
/// serving) and reflection services beside them; changes only by callers `access` allows.
async fn routes(
    server: Server,
    daemon: &Arc<Daemon>,
    controllers: &Controllers,
    metrics: &Arc<ApiMetrics>,
    access: Access,
) -> anyhow::Result<Router<Layers>> {
    let (mut reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<ImagesServer<ImagesService>>().await;
    reporter.set_serving::<InstancesServer<InstancesService>>().await;
    reporter.set_serving::<SubnetsServer<SubnetsService>>().await;
    reporter.set_serving::<VolumesServer<VolumesService>>().await;
    reporter.set_serving::<SnapshotsServer<SnapshotsService>>().await;
    reporter.set_serving::<AddressesServer<AddressesService>>().await;
    reporter.set_serving::<KeyPairsServer<KeyPairsService>>().await;
    reporter.set_serving::<LaunchTemplatesServer<LaunchTemplatesService>>().await;
    reporter.set_serving::<SecurityGroupsServer<SecurityGroupsService>>().await;
    reporter.set_serving::<TagsServer<TagsService>>().await;
    reporter.set_serving::<LoadBalancingServer<LoadBalancingService>>().await;
    reporter.set_serving::<AutoScalingServer<AutoScalingService>>().await;
    reporter.set_serving::<EnvironmentsServer<EnvironmentsService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let mut server = server.layer(CallLayer { metrics: metrics.clone(), access });
    Ok(server
        .add_service(health)
        .add_service(reflection)
        .add_service(ImagesServer::new(ImagesService(daemon.clone())))
        .add_service(InstancesServer::new(InstancesService(daemon.clone())))
        .add_service(SubnetsServer::new(SubnetsService(daemon.clone())))
        .add_service(VolumesServer::new(VolumesService(daemon.clone())))
        .add_service(SnapshotsServer::new(SnapshotsService(daemon.clone())))
        .add_service(AddressesServer::new(AddressesService(daemon.clone())))
        .add_service(KeyPairsServer::new(KeyPairsService(daemon.clone())))
        .add_service(LaunchTemplatesServer::new(LaunchTemplatesService(daemon.clone())))
        .add_service(SecurityGroupsServer::new(SecurityGroupsService(daemon.clone())))
        .add_service(TagsServer::new(TagsService(daemon.clone())))
        .add_service(LoadBalancingServer::new(LoadBalancingService(controllers.balancers.clone())))
        .add_service(AutoScalingServer::new(AutoScalingService(controllers.groups.clone())))
        .add_service(
            EnvironmentsServer::new(EnvironmentsService(controllers.environments.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        ))
}

/// Serves the API on `listeners` until `shutdown` resolves.
pub async fn serve(
    daemon: Arc<Daemon>,
    controllers: Controllers,
    listeners: Listeners,
    metrics: Arc<ApiMetrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|&stop| stop).await;
    };
    let unix = routes(Server::builder(), &daemon, &controllers, &metrics, Access::Full)
        .await?
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listeners.unix),
            until_stopped(stopped.clone()),
        );
    let read_only = routes(Server::builder(), &daemon, &controllers, &metrics, Access::ReadOnly)
        .await?
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listeners.read_only),
            until_stopped(stopped.clone()),
        );
    let tcp = async {
        let Some((listener, tls, access)) = listeners.tcp else { return Ok(()) };
        let server = Server::builder().tls_config(tls).context("the TLS settings")?;
        routes(server, &daemon, &controllers, &metrics, access)
            .await?
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), until_stopped(stopped.clone()))
            .await
            .context("serving the API over TCP")
    };
    let stopper = async {
        shutdown.await;
        let _ = stop.send(true);
        Ok(())
    };
    tokio::try_join!(
        async { unix.await.context("serving the API") },
        async { read_only.await.context("serving the read-only API") },
        tcp,
        stopper
    )?;
    Ok(())
}

/// A channel to the API on the Unix socket `path`.
pub async fn connect(path: &Path) -> anyhow::Result<Channel> {
    let path: PathBuf = path.to_owned();
    // The URI is a placeholder: the connector below decides where to connect.
    Endpoint::try_from("http://nuaged")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| "connecting to nuaged (is it running? see --endpoint)".to_string())
}

/// A channel to the API over TCP at `uri` (`https://HOST:PORT`), proving this client with
/// the certificate `cert` and key `key`, and trusting a daemon whose certificate `ca` signed.
pub async fn connect_tls(uri: &str, ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Channel> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(TlsIdentity::from_pem(read(cert)?, read(key)?));
    Endpoint::from_shared(uri.to_owned())
        .with_context(|| format!("endpoint {uri:?}"))?
        .tls_config(tls)
        .context("the TLS settings")?
        .connect()
        .await
        .with_context(|| format!("connecting to nuaged at {uri}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_name() {
        let groups = "root:x:0:\nnuage:x:998:alice,bob\nbroken\nodd:x:notanumber:\n";
        assert_eq!(group_id(groups, "nuage"), Some(998));
        assert_eq!(group_id(groups, "root"), Some(0));
        assert_eq!(group_id(groups, "odd"), None);
        assert_eq!(group_id(groups, "missing"), None);
        assert_eq!(group_id(groups, "broken"), None);
    }
}
