//! The Instances service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::blocking;
use super::launch_templates::launch_data;
use super::pb::instance_event::Event;
use super::pb::instances_server::Instances;
use super::pb::{
    DescribeInstancesRequest, DescribeInstancesResponse, GetConsoleOutputRequest, GetConsoleOutputResponse,
    Instance, InstanceEvent, InstanceIds, MetadataOptions as PbMetadataOptions,
    ModifyInstanceAttributeRequest, ModifyInstanceAttributeResponse, ModifyInstanceMetadataOptionsRequest,
    ModifyInstanceMetadataOptionsResponse, RequestLaunchTemplateData, RunInstancesRequest,
    RunInstancesResponse, StateChange, StateChanges, WatchInstanceRequest,
};
use super::resources::{self, Query};
use crate::daemon::instances::{RunSpec, StateChange as Change};
use crate::daemon::templates::{self, Which};
use crate::daemon::watch::InstanceEvent as WatchEvent;
use crate::daemon::{Daemon, DaemonError};
use crate::state::instance::{InstanceRecord, InstanceState, MetadataChange, MetadataOptions};
use crate::state::tag::Tag;

/// How often a watched instance's console and state are looked at.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Watches served at once (each is a thread): callers cannot exhaust the daemon.
pub const MAX_WATCHES: usize = 64;

/// Watches being served.
static WATCHES: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_WATCHES`] places, given back when dropped.
struct WatchSlot;

impl WatchSlot {
    /// A free place, if there is one.
    fn take() -> Option<Self> {
        let taken =
            WATCHES.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_WATCHES).then_some(n + 1));
        taken.ok().map(|_| Self)
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        WATCHES.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves the daemon's instances.
pub struct InstancesService(pub Arc<Daemon>);

fn instance(r: InstanceRecord, tags: Vec<Tag>) -> Instance {
    Instance {
        instance_id: r.id,
        image_id: r.image_id,
        instance_type: r.instance_type,
        state: r.state.as_str().into(),
        state_reason: r.state_reason,
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
        root_volume_id: r.root_volume_id,
        launch_time: r.launch_time,
        subnet_id: r.subnet_id,
        private_ip_address: r.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        key_name: r.key_name,
        tags: resources::to_pb(tags),
        security_group_ids: Vec::new(),
        metadata_options: Some(metadata_options(r.metadata_options)),
    }
}

fn metadata_options(options: MetadataOptions) -> PbMetadataOptions {
    PbMetadataOptions {
        http_tokens: options.http_tokens.as_str().into(),
        http_endpoint: options.endpoint_str().into(),
        http_put_response_hop_limit: options.hop_limit.into(),
    }
}

/// A MetadataOptions message as a change: each empty field (0 for the hop limit) changes
/// nothing; a bad value is refused before anything is made.
pub(super) fn metadata_change(options: Option<PbMetadataOptions>) -> Result<MetadataChange, DaemonError> {
    let Some(o) = options else { return Ok(MetadataChange::default()) };
    let given = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    Ok(MetadataChange {
        http_tokens: given(&o.http_tokens)
            .map(|t| t.parse())
            .transpose()
            .map_err(DaemonError::InvalidParameter)?,
        http_endpoint: given(&o.http_endpoint)
            .map(|e| MetadataOptions::parse_endpoint(&e))
            .transpose()
            .map_err(DaemonError::InvalidParameter)?,
        hop_limit: (o.http_put_response_hop_limit != 0)
            .then(|| MetadataOptions::check_hop_limit(o.http_put_response_hop_limit))
            .transpose()
            .map_err(DaemonError::InvalidParameter)?,
    })
}

/// Shows each instance's security groups, which the network plane keeps.
fn with_groups(daemon: &Daemon, mut instances: Vec<Instance>) -> Result<Vec<Instance>, DaemonError> {
    let mut groups = daemon.network.instance_groups()?;
    for instance in &mut instances {
        instance.security_group_ids = groups.remove(&instance.instance_id).unwrap_or_default();
    }
    Ok(instances)
}

fn event(id: &str, event: WatchEvent) -> InstanceEvent {
    let event = match event {
        WatchEvent::Console(bytes) => Event::Console(bytes),
        WatchEvent::State { previous, current } => Event::State(StateChange {
            instance_id: id.to_owned(),
            previous_state: previous.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            current_state: current.as_str().into(),
        }),
    };
    InstanceEvent { event: Some(event) }
}

/// A call that moves instances: `change` does it, and the reply lists each state change.
async fn moved(
    daemon: Arc<Daemon>,
    change: impl FnOnce(&Daemon) -> Result<Vec<Change>, DaemonError> + Send + 'static,
) -> Result<Response<StateChanges>, Status> {
    let changes = blocking(move || change(&daemon))
        .await?
        .into_iter()
        .map(|c| StateChange {
            instance_id: c.id,
            previous_state: c.previous.as_str().into(),
            current_state: c.current.as_str().into(),
        })
        .collect();
    Ok(Response::new(StateChanges { changes }))
}

#[tonic::async_trait]
impl Instances for InstancesService {
    async fn run_instances(
        &self,
        request: Request<RunInstancesRequest>,
    ) -> Result<Response<RunInstancesResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let instances = blocking(move || {
            let private_ip = match r.private_ip_address.as_str() {
                "" => None,
                text => Some(
                    text.parse()
                        .map_err(|e| DaemonError::InvalidParameter(format!("address {text:?}: {e}")))?,
                ),
            };
            let given = launch_data(RequestLaunchTemplateData {
                image_id: r.image_id,
                instance_type: r.instance_type,
                key_name: r.key_name,
                subnet_id: r.subnet_id,
                user_data: r.user_data,
                volumes: r.volumes,
                security_group_ids: r.security_group_ids,
                metadata_options: r.metadata_options,
                tag_specifications: r.tag_specifications,
            })?;
            let (data, reserved_tags) = match r.launch_template {
                None => (given, Vec::new()),
                Some(t) => {
                    let which = Which::new(&t.launch_template_id, &t.launch_template_name)?;
                    let (template, version) = daemon.templates.version(&which, t.version.parse()?)?;
                    (version.data.overlaid(given), templates::template_tags(&template.id, version.number))
                }
            };
            let spec = RunSpec {
                count: r.count,
                private_ip,
                reserved_tags,
                ..templates::run_spec(data, &daemon.key_pairs)?
            };
            let records = daemon.instances.run(&spec)?;
            let tags: Vec<Tag> = spec.tags.iter().chain(&spec.reserved_tags).cloned().collect();
            with_groups(&daemon, records.into_iter().map(|record| instance(record, tags.clone())).collect())
        })
        .await?;
        Ok(Response::new(RunInstancesResponse { instances }))
    }

    async fn describe_instances(
        &self,
        request: Request<DescribeInstancesRequest>,
    ) -> Result<Response<DescribeInstancesResponse>, Status> {
        let r = request.into_inner();
        let states = r
            .states
            .iter()
            .map(|s| s.parse::<InstanceState>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::from(DaemonError::InvalidParameter(e)))?;
        let query = Query::new(r.filters, r.max_results, r.next_token);
        let ids = r.instance_ids;
        let find = move |daemon: &Daemon| daemon.instances.describe(&ids, &states);
        let (instances, next_token) = resources::describe(self.0.clone(), query, find, instance).await?;
        let daemon = self.0.clone();
        let instances = blocking(move || with_groups(&daemon, instances)).await?;
        Ok(Response::new(DescribeInstancesResponse { instances, next_token }))
    }

    async fn modify_instance_attribute(
        &self,
        request: Request<ModifyInstanceAttributeRequest>,
    ) -> Result<Response<ModifyInstanceAttributeResponse>, Status> {
        let ModifyInstanceAttributeRequest { instance_id, groups } = request.into_inner();
        resources::done(self.0.clone(), move |d| d.network.set_instance_groups(&instance_id, &groups)).await
    }

    async fn modify_instance_metadata_options(
        &self,
        request: Request<ModifyInstanceMetadataOptionsRequest>,
    ) -> Result<Response<ModifyInstanceMetadataOptionsResponse>, Status> {
        let ModifyInstanceMetadataOptionsRequest { instance_id, options } = request.into_inner();
        let daemon = self.0.clone();
        let id = instance_id.clone();
        let now = blocking(move || daemon.instances.modify_metadata_options(&id, &metadata_change(options)?))
            .await?;
        Ok(Response::new(ModifyInstanceMetadataOptionsResponse {
            instance_id,
            instance_metadata_options: Some(metadata_options(now)),
        }))
    }

    async fn stop_instances(&self, request: Request<InstanceIds>) -> Result<Response<StateChanges>, Status> {
        let InstanceIds { instance_ids, force } = request.into_inner();
        moved(self.0.clone(), move |daemon| daemon.instances.stop(&instance_ids, force)).await
    }

    async fn reboot_instances(
        &self,
        request: Request<InstanceIds>,
    ) -> Result<Response<StateChanges>, Status> {
        let ids = request.into_inner().instance_ids;
        moved(self.0.clone(), move |daemon| daemon.instances.reboot(&ids)).await
    }

    async fn start_instances(&self, request: Request<InstanceIds>) -> Result<Response<StateChanges>, Status> {
        let ids = request.into_inner().instance_ids;
        moved(self.0.clone(), move |daemon| daemon.instances.start(&ids)).await
    }

    async fn terminate_instances(
        &self,
        request: Request<InstanceIds>,
    ) -> Result<Response<StateChanges>, Status> {
        let ids = request.into_inner().instance_ids;
        moved(self.0.clone(), move |daemon| daemon.instances.terminate(&ids)).await
    }

    type WatchInstanceStream = ReceiverStream<Result<InstanceEvent, Status>>;

    // A stream's items are tonic's Result<_, Status>, however large Status is.
    #[allow(clippy::result_large_err)]
    async fn watch_instance(
        &self,
        request: Request<WatchInstanceRequest>,
    ) -> Result<Response<Self::WatchInstanceStream>, Status> {
        let WatchInstanceRequest { instance_id: id, from_start } = request.into_inner();
        let slot = WatchSlot::take().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "ResourceLimitExceeded: {MAX_WATCHES} watches are served at once; close one"
            ))
        })?;
        let daemon = self.0.clone();
        let mut watch = {
            let id = id.clone();
            blocking(move || daemon.instances.watch(&id, from_start)).await?
        };
        let (events, stream) = tokio::sync::mpsc::channel(16);
        // A thread per watcher, polling: it ends when the instance is terminated or the
        // caller hangs up (the channel closes).
        std::thread::spawn(move || loop {
            let _slot = &slot;
            let batch: Vec<Result<InstanceEvent, Status>> = match watch.poll() {
                Ok(batch) => batch.into_iter().map(|e| Ok(event(&id, e))).collect(),
                Err(e) => vec![Err(Status::from(e))],
            };
            let failed = batch.iter().any(Result::is_err);
            for item in batch {
                if events.blocking_send(item).is_err() {
                    return;
                }
            }
            if failed || watch.finished() || events.is_closed() {
                return;
            }
            std::thread::sleep(WATCH_INTERVAL);
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn get_console_output(
        &self,
        request: Request<GetConsoleOutputRequest>,
    ) -> Result<Response<GetConsoleOutputResponse>, Status> {
        let id = request.into_inner().instance_id;
        let daemon = self.0.clone();
        let output = {
            let id = id.clone();
            blocking(move || daemon.instances.console_output(&id)).await?
        };
        Ok(Response::new(GetConsoleOutputResponse { instance_id: id, output }))
    }
}
