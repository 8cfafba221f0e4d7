//! Tiny hand-assembled guests run by the real `nuage-vmm` binary on this host's `/dev/kvm`:
//! boot protocol, serial console in and out, port and MMIO I/O, CPUID, reset and power-off
//! paths, signals, and application processors started by INIT/SIPI.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::guest::{bzimage_kernel, elf_kernel, Asm, LOAD_ADDR};
use common::{run_vmm, wait_with_timeout, write_file};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Boots `kernel` and returns (exit status, console bytes, stderr).
fn boot_raw(kernel: &[u8], extra: &[&str]) -> (i32, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "kernel", kernel);
    let mut args = vec!["--kernel", path.as_str(), "--memory", "16", "--console-stdout"];
    args.extend_from_slice(extra);
    let out = run_vmm(&args, TIMEOUT);
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs nuage-vmm with `args` for `running`, then stops it with SIGTERM; returns its output.
fn run_until_sigterm(args: &[&str], running: Duration) -> std::process::Output {
    let child = Command::new(common::vmm_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(running);
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    wait_with_timeout(child, Duration::from_secs(10))
}

/// Boots `kernel` and returns (exit status, console text, stderr).
fn boot(kernel: &[u8], extra: &[&str]) -> (i32, String, String) {
    let (status, stdout, stderr) = boot_raw(kernel, extra);
    (status, String::from_utf8_lossy(&stdout).into_owned(), stderr)
}

/// A guest printing without end fills no disk (issue 16): its console log is moved aside
/// at its limit and begun anew, the latest output in the log itself and the one before in
/// `console.log.1`, nothing more.
#[test]
fn a_console_log_is_bounded_whatever_the_guest_prints() {
    let dir = tempfile::tempdir().unwrap();
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";
    let code = (0..100).fold(Asm::new(), |asm, _| asm.print(line)).print("last\n").acpi_poweroff().spin();
    let kernel = write_file(dir.path(), "kernel", &elf_kernel(code.bytes()));
    let log = dir.path().join("console.log");
    let args = ["--kernel", &kernel, "--memory", "16", "--console-log", log.to_str().unwrap()];
    let out = run_vmm(&[&args[..], &["--console-log-limit", "1000"]].concat(), TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // 6405 bytes in all: six full logs of 1000 bytes, then 405.
    let latest = std::fs::read_to_string(&log).unwrap();
    assert_eq!(latest.len(), 405);
    assert!(latest.ends_with("-\nlast\n"), "{latest}");
    assert_eq!(std::fs::metadata(dir.path().join("console.log.1")).unwrap().len(), 1000);
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 3, "the kernel, the log and one old log");
}

/// A system call outside a thread's seccomp filter stops the VMM with its own status, and
/// the log names the thread and the call (issue 16); `--no-seccomp` turns the filters off.
/// The call is made by a trigger compiled only into debug builds.
#[test]
fn a_forbidden_system_call_stops_the_vmm_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_file(dir.path(), "kernel", &elf_kernel(Asm::new().acpi_poweroff().spin().bytes()));
    for (thread, flags, status) in [("main", &[][..], 6), ("vcpu", &[], 6), ("vcpu", &["--no-seccomp"], 0)] {
        let child = Command::new(common::vmm_bin())
            .args(["--kernel", &kernel, "--memory", "16"])
            .args(flags)
            .env("NUAGE_VMM_FORBIDDEN_SYSCALL", thread)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_with_timeout(child, TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{thread} {flags:?}: {stderr}");
        if status != 0 {
            let named = format!("the {thread} thread made system call {}", libc::SYS_mount);
            assert!(stderr.contains(&named), "{stderr}");
        }
    }
}

#[test]
fn elf_guest_prints_and_powers_off() {
    let code = Asm::new().print("hello from a tiny guest\n").acpi_poweroff().spin();
    let (status, stdout, stderr) = boot(&elf_kernel(code.bytes()), &[]);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert_eq!(stdout, "hello from a tiny guest\n");
}

#[test]
fn bzimage_guest_enters_at_the_64bit_entry() {
    let code = Asm::new().print("bzImage ok\n").acpi_poweroff().spin();
    let (status, stdout, stderr) = boot(&bzimage_kernel(code.bytes()), &[]);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert_eq!(stdout, "bzImage ok\n");
}

#[test]
fn guest_finds_the_zero_page_in_rsi() {
    let code = Asm::new()
        .raw(&[0x8a, 0x86, 0x10, 0x02, 0x00, 0x00]) // mov al, [rsi + 0x210]: type_of_loader
        .print_al()
        .raw(&[0x8a, 0x86, 0xe8, 0x01, 0x00, 0x00]) // mov al, [rsi + 0x1e8]: e820_entries
        .raw(&[0x04, b'0']) // add al, '0'
        .print_al()
        .acpi_poweroff()
        .spin();
    let (status, stdout, stderr) = boot_raw(&elf_kernel(code.bytes()), &[]);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert_eq!(stdout, [0xff, b'3']);
}

#[test]
fn cpuid_shows_hypervisor_tsc_deadline_and_kvm_signature() {
    let code = Asm::new()
        .cpuid(1)
        .raw(&[0x89, 0xc8, 0xc1, 0xe8, 0x1f]) // mov eax, ecx; shr eax, 31
        .raw(&[0x04, b'0'])
        .print_al()
        .cpuid(1)
        .raw(&[0x89, 0xc8, 0xc1, 0xe8, 0x18, 0x24, 0x01]) // mov eax, ecx; shr eax, 24; and al, 1
        .raw(&[0x04, b'0'])
        .print_al()
        .cpuid(0x4000_0000)
        .raw(&[0x89, 0xd8]) // mov eax, ebx: "KVMK"
        .print_al()
        .acpi_poweroff()
        .spin();
    let (status, stdout, stderr) = boot(&elf_kernel(code.bytes()), &[]);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert_eq!(stdout, "11K");
}

#[test]
fn keyboard_controller_reset_exits_with_reboot_status() {
    let code = Asm::new().outb(0x64, 0xfe).spin();
    let (status, _, stderr) = boot(&elf_kernel(code.bytes()), &[]);
    assert_eq!(status, 4, "stderr: {stderr}");
    assert!(stderr.contains("i8042"), "stderr: {stderr}");
}

#[test]
fn acpi_reset_register_exits_with_reboot_status() {
    let code = Asm::new().outb(0x600, 0x01).spin();
    let (status, _, stderr) = boot(&elf_kernel(code.bytes()), &[]);
    assert_eq!(status, 4, "stderr: {stderr}");
    assert!(stderr.contains("ACPI reset"), "stderr: {stderr}");
}

#[test]
fn triple_fault_exits_with_reboot_status() {
    // ud2 with an empty IDT: #UD -> #GP -> #DF -> triple fault -> KVM_EXIT_SHUTDOWN.
    let code = Asm::new().print("x").raw(&[0x0f, 0x0b]);
    let (status, stdout, stderr) = boot(&elf_kernel(code.bytes()), &[]);
    assert_eq!(status, 4, "stderr: {stderr}");
    assert_eq!(stdout, "x");
    assert!(stderr.contains("triple fault"), "stderr: {stderr}");
}

#[test]
fn hostile_port_and_mmio_accesses_do_not_stop_the_vm() {
    let code = Asm::new()
        .mov_dx(0x1234)
        .in_al_dx() // unclaimed port reads as 0xff
        .print_al()
        .mov_dx(0xcf8)
        .raw(&[0xb8, 0x00, 0x00, 0x00, 0x80, 0xef]) // mov eax, 0x80000000; out dx, eax
        .mov_dx(0x3f8)
        .raw(&[0x66, 0xef]) // 16-bit write to the serial data port
        .outb(0x600, 0x14) // sleep control without SLP_EN: ignored
        .outb(0x600, 0xff) // garbage: ignored
        .outb(0x64, 0x00) // harmless i8042 command
        .raw(&[0xa2, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00]) // mov [0xc0000000], al (no device)
        .raw(&[0xa0, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00]) // mov al, [0xc0000000]
        .print_al()
        .print("survived")
        .acpi_poweroff()
        .spin();
    let (status, stdout, stderr) = boot_raw(&elf_kernel(code.bytes()), &[]);
    assert_eq!(status, 0, "stderr: {stderr}");
    // 0xff from the unclaimed port, AL (0) from the 16-bit serial write, 0xff from MMIO.
    assert_eq!(stdout, b"\xff\x00\xffsurvived");
}

#[test]
fn virtio_disks_answer_at_their_windows_and_survive_hostile_registers() {
    const FIRST: u64 = 0xd000_0000;
    const SECOND: u64 = 0xd000_1000;
    let mut code = Asm::new().load_eax(FIRST); // MagicValue "virt"
    for _ in 0..3 {
        code = code.print_al().shr_eax(8);
    }
    code = code
        .print_al()
        .load_eax(SECOND + 0x08) // DeviceID of the second disk: 2 (block)
        .print_al()
        .store_dword(FIRST + 0x50, 0) // notify queue 0 before setup (caught by the ioeventfd)
        .store_dword(FIRST + 0x50, 0xffff_ffff) // notify a queue that does not exist
        .store_dword(FIRST + 0x70, 0x0f) // DRIVER_OK with no features or queues
        .store_dword(FIRST + 0x38, 0xffff) // absurd queue size
        .store_dword(FIRST + 0x44, 1) // queue ready with no rings
        .store_dword(FIRST + 0x104, 0xdead_beef) // write into the config space
        .store_dword(FIRST + 0xffc, 1) // end of the window
        .load_eax(FIRST + 0x70) // status: FEATURES_OK refused, so bit 3 stays clear
        .print_al()
        .print("survived")
        .acpi_poweroff()
        .spin();
    let dir = tempfile::tempdir().unwrap();
    let disk = |name: &str| {
        let path = write_file(dir.path(), name, &[0u8; 4096]);
        format!("path={path},id={name}")
    };
    let (first, second) = (disk("a"), disk("b"));
    let (status, stdout, stderr) =
        boot_raw(&elf_kernel(code.bytes()), &["--disk", &first, "--disk", &second]);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert_eq!(stdout, b"virt\x02\x07survived");
}

/// A guest that makes its VMM warn as fast as it can write a register fills no disk
/// (issue 16): the warning is written a few times, the rest counted and the count written
/// once.
#[test]
fn a_guest_cannot_flood_the_vmm_log() {
    const DISK: u64 = 0xd000_0000;
    let code = Asm::new();
    let top = code.here();
    // Reset, then ACKNOWLEDGE | DRIVER | FEATURES_OK without VERSION_1: refused, a warning.
    let code = code.store_dword(DISK + 0x70, 0).store_dword(DISK + 0x70, 0x0b).jump_to(top);
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_file(dir.path(), "kernel", &elf_kernel(code.bytes()));
    let disk = write_file(dir.path(), "disk", &[0u8; 4096]);
    let disk = format!("path={disk}");
    let out =
        run_until_sigterm(&["--kernel", &kernel, "--memory", "16", "--disk", &disk], Duration::from_secs(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(stderr.matches("driver features refused").count(), 3, "{stderr}");
    let held_back: u64 = stderr
        .lines()
        .find_map(|line| line.strip_prefix("nuage-vmm: ")?.strip_suffix(" were not logged"))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of held-back warnings: {stderr}"));
    assert!(held_back > 1000, "{held_back} warnings in 2 s");
    assert!(stderr.len() < 4096, "{} bytes of log", stderr.len());
}

/// A qcow2 disk whose header names a backing file outside `--disk-root` (the daemon names
/// its store) is refused before anything starts (issue 16): a header is data, and a
/// volume's must not make the VMM read another file of the host.
#[test]
fn a_backing_file_outside_the_disk_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let secret = write_file(dir.path(), "secret.raw", &[7u8; 4096]);
    let disk = store.join("escape.qcow2");
    nuage::block::qcow2::Qcow2::create(&disk, 4096, Some((&secret, "raw"))).unwrap();
    let kernel = write_file(dir.path(), "kernel", &elf_kernel(Asm::new().acpi_poweroff().spin().bytes()));
    let disk = format!("path={},format=qcow2", disk.display());
    let args = ["--kernel", &kernel, "--memory", "16", "--disk", &disk];
    let out = run_vmm(&[&args[..], &["--disk-root", store.to_str().unwrap()]].concat(), TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("outside"), "{stderr}");
    // Without a root (a VMM run by hand) the chain is the caller's to choose.
    let out = run_vmm(&args, TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sigterm_stops_a_running_guest() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_file(dir.path(), "kernel", &elf_kernel(Asm::new().print("up").spin().bytes()));
    let args = ["--kernel", &kernel, "--memory", "16", "--console-stdout"];
    let out = run_until_sigterm(&args, Duration::from_millis(500));
    assert_eq!(out.status.code(), Some(5), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"up");
}

#[test]
fn console_input_reaches_the_guest() {
    let code = Asm::new()
        .mov_dx(0x3fd) // wait: LSR
        .in_al_dx()
        .raw(&[0xa8, 0x01]) // test al, 1 (data ready)
        .raw(&[0x74, 0xf7]) // jz wait
        .mov_dx(0x3f8)
        .in_al_dx()
        .out_dx_al() // echo it
        .acpi_poweroff()
        .spin();
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_file(dir.path(), "kernel", &elf_kernel(code.bytes()));
    let mut child = Command::new(common::vmm_bin())
        .args(["--kernel", &kernel, "--memory", "16", "--console-stdout", "--console-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Z").unwrap();
    let out = wait_with_timeout(child, TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"Z");
}

#[test]
fn console_log_file_receives_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let code = Asm::new().print("logged\n").acpi_poweroff().spin();
    let (status, stdout, stderr) = boot(&elf_kernel(code.bytes()), &["--console-log", log.to_str().unwrap()]);
    assert_eq!(status, 0, "stderr: {stderr}");
    assert_eq!(stdout, "logged\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "logged\n");
}

/// Offset of the application-processor code inside the test image.
const AP_CODE_OFFSET: u64 = 0x400;
/// Where the BSP copies it: SIPI vector 8 starts APs in real mode at 0x8000.
const AP_TRAMPOLINE: u64 = 0x8000;
/// Byte every AP increments once it has run.
const AP_COUNTER: u64 = 0x6000;

fn smp_guest(vcpus: u8) -> Vec<u8> {
    let ap = Asm::new()
        .raw(&[0x66, 0xb8, 0x01, 0x00, 0x00, 0x00]) // mov eax, 1
        .raw(&[0x66, 0x31, 0xc9, 0x0f, 0xa2]) // xor ecx, ecx; cpuid
        .raw(&[0x66, 0xc1, 0xeb, 0x18]) // shr ebx, 24: APIC ID
        .raw(&[0x80, 0xc3, b'0', 0x88, 0xd8]) // add bl, '0'; mov al, bl
        .raw(&[0xba, 0xf8, 0x03, 0xee]) // mov dx, 0x3f8; out dx, al
        .raw(&[0xf0, 0xfe, 0x06, 0x00, 0x60]) // lock inc byte [0x6000]
        .cli_hlt();
    let icr = |value: u32| {
        let mut bytes = vec![0xb8];
        bytes.extend_from_slice(&value.to_le_bytes()); // mov eax, value
        bytes.extend_from_slice(&[0xa3, 0x00, 0x03, 0xe0, 0xfe, 0, 0, 0, 0]); // mov [0xfee00300], eax
        bytes
    };
    let mut bsp = Asm::new()
        .raw(&[0x48, 0xbe])
        .raw(&(LOAD_ADDR + AP_CODE_OFFSET).to_le_bytes()) // mov rsi, source
        .raw(&[0x48, 0xbf])
        .raw(&AP_TRAMPOLINE.to_le_bytes()) // mov rdi, trampoline
        .raw(&[0x48, 0xb9])
        .raw(&(ap.bytes().len() as u64).to_le_bytes()) // mov rcx, len
        .raw(&[0xf3, 0xa4]) // rep movsb
        .cpuid(1)
        .raw(&[0xc1, 0xeb, 0x18, 0x80, 0xc3, b'0', 0x88, 0xd8]) // APIC ID of the BSP as a digit
        .print_al()
        .raw(&icr(0x000c_4500)) // INIT to all but self
        .raw(&icr(0x000c_4600 | (AP_TRAMPOLINE >> 12) as u32)); // SIPI
    let wait = bsp.here();
    bsp = bsp
        .raw(&[0xa0])
        .raw(&AP_COUNTER.to_le_bytes()) // mov al, [counter]
        .raw(&[0x3c, vcpus - 1]); // cmp al, vcpus - 1
    let back = (wait as isize - (bsp.here() as isize + 2)) as i8;
    bsp = bsp.raw(&[0x75, back as u8]).print(" all up").acpi_poweroff().spin();
    let mut image = bsp.bytes().to_vec();
    assert!(image.len() <= AP_CODE_OFFSET as usize);
    image.resize(AP_CODE_OFFSET as usize, 0x90);
    image.extend_from_slice(ap.bytes());
    image
}

#[test]
fn application_processors_start_with_their_own_apic_ids() {
    let (status, stdout, stderr) = boot(&elf_kernel(&smp_guest(4)), &["--vcpus", "4"]);
    assert_eq!(status, 0, "stdout: {stdout:?} stderr: {stderr}");
    assert!(stdout.starts_with('0'), "BSP has APIC ID 0: {stdout:?}");
    let mut ids: Vec<char> = stdout[1..stdout.len() - " all up".len()].chars().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!['1', '2', '3'], "stdout: {stdout:?}");
    assert!(stdout.ends_with(" all up"));
}

#[test]
fn the_cmos_clock_shows_the_host_date_and_stats_count_the_exits() {
    // Reads the RTC's century, year, month and day (BCD) and prints them raw.
    let code = [0x32u8, 0x09, 0x08, 0x07]
        .iter()
        .fold(Asm::new(), |asm, &register| asm.outb(0x70, register).mov_dx(0x71).in_al_dx().print_al())
        .acpi_poweroff()
        .spin();
    let before = host_date();
    let (status, stdout, stderr) = boot_raw(&elf_kernel(code.bytes()), &["--stats"]);
    let after = host_date();
    assert_eq!(status, 0, "stderr: {stderr}");
    let bcd = |b: u8| u32::from(b >> 4) * 10 + u32::from(b & 0xf);
    let guest = match stdout.as_slice() {
        [century, year, month, day] => {
            format!("{:02}{:02}-{:02}-{:02}", bcd(*century), bcd(*year), bcd(*month), bcd(*day))
        }
        other => panic!("expected four bytes, got {other:?}"),
    };
    assert!(guest == before || guest == after, "guest date {guest}, host {before}");
    // Four reads and four index writes on the RTC's ports, four bytes out on COM1.
    let stats =
        stderr.lines().skip_while(|l| !l.starts_with("exit statistics")).collect::<Vec<_>>().join("\n");
    for target in ["io-out       port 0x0070", "io-in        port 0x0071", "io-out       port 0x03f8"] {
        let line =
            stats.lines().find(|l| l.contains(target)).unwrap_or_else(|| panic!("no {target} in:\n{stats}"));
        assert!(line.split_whitespace().any(|w| w == "4"), "{line}");
    }
}

/// Today's UTC date as YYYY-MM-DD.
fn host_date() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
