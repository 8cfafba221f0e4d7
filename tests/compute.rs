//! The controllers' seam, `nuage::daemon::compute::Compute`, against the real daemon: what a
//! controller launches carries its tags from the start, is found again by them, reports its
//! state changes as events, and goes when terminated.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::guest::{elf_kernel, Asm};
use nuage::block::DiskFormat;
use nuage::daemon::compute::Compute;
use nuage::daemon::config::DaemonConfig;
use nuage::daemon::events::StateEvent;
use nuage::daemon::images::ImageFiles;
use nuage::daemon::instances::RunSpec;
use nuage::daemon::Daemon;
use nuage::state::instance::InstanceState;
use nuage::state::tag::Tag;
use nuage::store::image::ImageSpec;
use tokio::sync::broadcast::error::TryRecvError;

fn tag(key: &str, value: &str) -> Tag {
    Tag { key: key.into(), value: value.into() }
}

/// The ids of the instances carrying `key`=`value`, sorted.
fn tagged(compute: &dyn Compute, key: &str, value: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        compute.instances_tagged(key, Some(value)).unwrap().into_iter().map(|i| i.record.id).collect();
    ids.sort();
    ids
}

/// Waits until `events` has told that each of `ids` reached `state`.
fn wait_for_events(
    events: &mut tokio::sync::broadcast::Receiver<StateEvent>,
    ids: &[String],
    state: InstanceState,
) {
    let mut waiting: Vec<&String> = ids.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiting.is_empty() {
        assert!(Instant::now() < deadline, "no {state:?} event for {waiting:?}");
        match events.try_recv() {
            Ok(event) if event.state == state => waiting.retain(|id| **id != event.id),
            Ok(_) => {}
            Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("events: {e}"),
        }
    }
}

#[test]
fn a_controller_launches_finds_and_terminates_its_instances_by_tag() {
    let dir = tempfile::tempdir().unwrap();
    let config = DaemonConfig {
        state_dir: dir.path().join("state"),
        socket: dir.path().join("api.sock"),
        vmm: common::vmm_bin().into(),
        stop_timeout_secs: 1,
        ..DaemonConfig::default()
    };
    let imports = config.import_dir();
    let (daemon, _) = Daemon::open(config).unwrap();
    let compute: &dyn Compute = &daemon;
    common::write_file(&imports, "guest.kernel", &elf_kernel(Asm::new().print("up\n").cli_hlt().bytes()));
    common::write_file(&imports, "guest.disk", &vec![0u8; 1 << 20]);
    let files = ImageFiles {
        disk: "guest.disk".into(),
        format: DiskFormat::Raw,
        kernel: Some("guest.kernel".into()),
        initrd: None,
    };
    let spec = ImageSpec { name: "guest".into(), description: String::new(), cmdline: String::new() };
    let image = daemon.images.register(&spec, &files).unwrap();

    let mut events = compute.instance_events();
    let launch = |count, group: &str| RunSpec {
        image_id: image.id.clone(),
        count,
        tags: vec![tag("group", group), tag("Name", "from-a-controller")],
        ..RunSpec::default()
    };
    let mut web: Vec<String> =
        compute.run_instances(&launch(2, "web")).unwrap().into_iter().map(|i| i.id).collect();
    web.sort();
    let db: Vec<String> =
        compute.run_instances(&launch(1, "db")).unwrap().into_iter().map(|i| i.id).collect();
    wait_for_events(&mut events, &web, InstanceState::Running);
    assert_eq!(tagged(compute, "group", "web"), web);
    assert_eq!(tagged(compute, "group", "db"), db);
    assert_eq!(tagged(compute, "group", "w*"), Vec::<String>::new(), "values match exactly, not as patterns");
    let found = compute.instances_tagged("group", Some("web")).unwrap();
    assert!(found.iter().all(|i| i.tags.contains(&tag("Name", "from-a-controller"))), "{found:?}");

    compute.terminate_instances(&web).unwrap();
    wait_for_events(&mut events, &web, InstanceState::Terminated);
    assert_eq!(tagged(compute, "group", "web"), Vec::<String>::new(), "terminated instances are not counted");
    assert_eq!(tagged(compute, "group", "db"), db);
    compute.terminate_instances(&db).unwrap();
    wait_for_events(&mut events, &db, InstanceState::Terminated);
}
