//! The 16550A serial console (COM1), built on `vm-superio`.
//!
//! Output goes to any number of sinks (a log file, stdout) a line at a time; input is queued
//! by the VMM's main loop from stdin. The interrupt line is an eventfd registered as an irqfd on GSI 4.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::vmm::api::config::rotated_console_log;
use crate::vmm::devices::{complete_byte_read, BusDevice};

/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// Ports a 16550 occupies.
pub const COM1_PORT_COUNT: u16 = 8;
/// COM1's ISA interrupt, identity-mapped to the IOAPIC pin of the same number.
pub const COM1_IRQ: u32 = 4;

/// Raises the serial interrupt by signalling an irqfd.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Most console output held back before it is written out, whatever the line length.
const OUTPUT_BUFFER: usize = 4096;
/// How long a partial line (a prompt, say) may wait for its end before it is written anyway.
const OUTPUT_LINGER: Duration = Duration::from_millis(20);

/// Where console output goes: every sink (a log file, stdout) gets it a line at a time, or
/// [`OUTPUT_BUFFER`] bytes at a time, and a partial line no later than [`OUTPUT_LINGER`]
/// after its first byte. The guest writes one byte per exit, and a system call per byte per
/// sink cost several times the exit itself (measured with `--stats` in the boot benchmark).
/// A complete line is out before the guest's next instruction, so a crashing guest's last
/// words are kept; a killed VMM loses at most a partial line.
pub struct ConsoleSinks {
    sinks: Vec<Box<dyn Write + Send>>,
    pending: Vec<u8>,
    /// Readable once a partial line has waited [`OUTPUT_LINGER`]; the main loop then calls
    /// [`SerialConsole::write_out_lingering`].
    linger: TimerFd,
    /// Whether `linger` runs: armed once per wait, not once per byte.
    linger_armed: bool,
}

impl ConsoleSinks {
    /// Console output to `sinks`.
    pub fn new(sinks: Vec<Box<dyn Write + Send>>) -> std::io::Result<Self> {
        let linger = TimerFd::new()?;
        // Non-blocking, so the main loop can never wait on a timer the vCPU re-armed.
        // SAFETY: fcntl on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::fcntl(linger.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { sinks, pending: Vec::with_capacity(OUTPUT_BUFFER), linger, linger_armed: false })
    }

    /// Writes what is held to every sink. A sink that fails (a closed pipe, a full disk) is
    /// dropped; the guest keeps running.
    fn write_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = &self.pending;
        self.sinks.retain_mut(|sink| match sink.write_all(pending).and_then(|()| sink.flush()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "console sink failed; dropping it");
                false
            }
        });
        self.pending.clear();
    }
}

impl Write for ConsoleSinks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if buf.contains(&b'\n') || self.pending.len() >= OUTPUT_BUFFER {
            self.write_out();
        } else if !self.linger_armed {
            match self.linger.reset(OUTPUT_LINGER, None) {
                Ok(()) => self.linger_armed = true,
                // No timer to come back: the partial line goes out now.
                Err(_) => self.write_out(),
            }
        }
        Ok(buf.len())
    }

    /// The serial model flushes after every byte; output leaves by the rules above instead.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ConsoleSinks {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// A console log file the guest cannot grow without bound: once it holds `limit` bytes
/// its contents move to `<name>.1` (replacing the one before) and it begins anew, so at
/// most twice the limit is on disk and the latest output is always in the file itself.
/// Both files are opened at the start: a jailed VMM can create, rename or open no file
/// once its VM runs.
pub struct RotatingLog {
    file: File,
    previous: File,
    written: u64,
    limit: u64,
}

impl RotatingLog {
    /// Appends to the log at `path` (made 0600), rotated at `limit` bytes.
    pub fn open(path: &Path, limit: u64) -> std::io::Result<Self> {
        // Kept as they are: the log goes on after what an earlier run wrote.
        let open = |path: &Path| {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(path)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            Ok::<_, std::io::Error>(file)
        };
        let file = open(path)?;
        let written = file.metadata()?.len();
        let previous = open(&rotated_console_log(path))?;
        Ok(Self { file, previous, written, limit: limit.max(1) })
    }

    /// Copies the full log over the one before and empties it.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.previous.set_len(0)?;
        let mut buf = vec![0u8; 64 << 10];
        let mut offset = 0;
        loop {
            let n = self.file.read_at(&mut buf, offset)?;
            if n == 0 {
                break;
            }
            self.previous.write_all_at(&buf[..n], offset)?;
            offset += n as u64;
        }
        self.file.set_len(0)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written >= self.limit {
            self.rotate()?;
        }
        let room = usize::try_from(self.limit - self.written).unwrap_or(usize::MAX);
        let written = self.file.write_at(&buf[..buf.len().min(room)], self.written)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The serial port as a bus device.
pub struct SerialConsole {
    inner: Mutex<Serial<IrqLine, NoEvents, ConsoleSinks>>,
}

impl SerialConsole {
    /// A 16550 that interrupts through `irq` and prints to `out`.
    pub fn new(irq: IrqLine, out: ConsoleSinks) -> Self {
        Self { inner: Mutex::new(Serial::new(irq, out)) }
    }

    fn lock(&self) -> MutexGuard<'_, Serial<IrqLine, NoEvents, ConsoleSinks>> {
        // A panicked holder left the registers as they were; the console serves on.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The timer the main loop waits on for a partial line of output.
    pub fn linger_fd(&self) -> RawFd {
        self.lock().writer_mut().linger.as_raw_fd()
    }

    /// Writes out the output held back, a partial line included.
    pub fn write_out_lingering(&self) {
        let mut serial = self.lock();
        let out = serial.writer_mut();
        // Nothing to read only when the timer was re-armed since it woke the caller.
        let _ = out.linger.wait();
        out.linger_armed = false;
        out.write_out();
    }

    /// Queues host input for the guest; returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&self, bytes: &[u8]) -> usize {
        let mut serial = self.lock();
        let room = serial.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        match serial.enqueue_raw_bytes(&bytes[..room]) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = ?e, "cannot queue console input");
                0
            }
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let value = self.lock().read(offset as u8);
        complete_byte_read(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(value) = data.first() {
            let mut serial = self.lock();
            if let Err(e) = serial.write(offset as u8, *value) {
                tracing::warn!(error = ?e, "serial write failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_log_rotates_at_its_limit_keeping_the_latest_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, b"0123").unwrap();
        let mut log = RotatingLog::open(&path, 10).unwrap();
        log.write_all(b"456789abcdefghijklmnopqrstuvw").unwrap();
        log.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"uvw", "the latest output");
        assert_eq!(std::fs::read(dir.path().join("console.log.1")).unwrap(), b"klmnopqrst", "the log before");
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "one old log kept, no more");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    use std::sync::{Arc, Mutex as StdMutex};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Clone, Default)]
    struct Shared(Arc<StdMutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn console(out: Vec<Box<dyn Write + Send>>) -> (SerialConsole, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let serial = SerialConsole::new(IrqLine(irq.try_clone().unwrap()), ConsoleSinks::new(out).unwrap());
        (serial, irq)
    }

    fn print(serial: &SerialConsole, text: &[u8]) {
        for byte in text {
            serial.write(0, &[*byte]);
        }
    }

    fn linger_fired(serial: &SerialConsole) -> bool {
        let mut poll = libc::pollfd { fd: serial.linger_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut poll, 1, 1000) == 1 }
    }

    #[test]
    fn output_leaves_by_the_line_a_partial_line_after_a_linger() {
        let out = Shared::default();
        let (serial, _irq) = console(vec![Box::new(out.clone())]);
        print(&serial, b"one\nlog");
        assert_eq!(out.0.lock().unwrap().as_slice(), b"one\n", "a complete line at once");
        assert!(linger_fired(&serial), "the partial line's timer runs out");
        print(&serial, b"in: ");
        serial.write_out_lingering();
        assert_eq!(
            out.0.lock().unwrap().as_slice(),
            b"one\nlogin: ",
            "the prompt, once its timer woke the loop"
        );
        print(&serial, b"x");
        assert!(linger_fired(&serial), "a new partial line arms the timer again");
        // A line longer than the buffer leaves in buffer-sized pieces; the rest at the end.
        print(&serial, &vec![b'y'; OUTPUT_BUFFER + 5]);
        assert_eq!(out.0.lock().unwrap().len(), 11 + OUTPUT_BUFFER);
        drop(serial);
        assert_eq!(out.0.lock().unwrap().len(), 11 + OUTPUT_BUFFER + 6);
    }

    #[test]
    fn output_reaches_every_sink_even_if_one_fails() {
        let (a, b) = (Shared::default(), Shared::default());
        let (serial, _irq) = console(vec![Box::new(a.clone()), Box::new(Broken), Box::new(b.clone())]);
        print(&serial, b"hi\n");
        assert_eq!(a.0.lock().unwrap().as_slice(), b"hi\n");
        assert_eq!(b.0.lock().unwrap().as_slice(), b"hi\n");
    }

    #[test]
    fn input_is_readable_and_raises_an_interrupt() {
        let (serial, irq) = console(vec![]);
        serial.write(1, &[0x01]); // IER: received-data interrupt on
        assert_eq!(serial.enqueue_input(b"ok"), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut lsr = [0u8];
        serial.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut byte = [0u8; 2];
        serial.read(0, &mut byte);
        assert_eq!(byte, [b'o', 0]);
    }

    #[test]
    fn input_beyond_the_fifo_is_refused_not_lost_silently() {
        let (serial, _irq) = console(vec![]);
        let room = serial.inner.lock().unwrap().fifo_capacity();
        let big = vec![b'x'; room + 10];
        assert_eq!(serial.enqueue_input(&big), room);
        assert_eq!(serial.enqueue_input(b"y"), 0);
    }
}
