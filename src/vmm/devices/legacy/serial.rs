//! The 16550A serial console (COM1), built on `vm-superio`.
//!
//! Output goes to any number of sinks (a log file, stdout) a line at a time; input is queued
//! by the VMM's main loop from stdin. The interrupt line is an eventfd registered as an
//! irqfd on GSI 4.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

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
/// How old a partial line may grow before the guest's next look at the port writes it out.
const OUTPUT_LINGER: Duration = Duration::from_millis(20);
/// The transmit register's offset: each byte of output.
const THR_OFFSET: u64 = 0;
/// The interrupt-enable register's offset. Linux's drivers write it at the end of every
/// burst of output: the tty layer to stop transmit interrupts, `printk` to restore them.
const IER_OFFSET: u64 = 1;

/// Where console output goes: every sink (a log file, stdout) gets it a line at a time (or
/// [`OUTPUT_BUFFER`] bytes at a time), and a partial line (a `login: ` prompt) when the
/// guest ends its burst of output, or at its first other use of the port (a poll of the
/// line status, say) [`OUTPUT_LINGER`] after the line began. The guest writes one byte per
/// exit, and a system call per byte per sink cost several times the exit itself (measured
/// with `--stats` in the boot benchmark). Everything is written by the vCPU thread before
/// the guest runs on, with no timer or other thread involved (a timer that woke the main
/// loop wedged the nested test host): a complete line is out before the guest's next
/// instruction, so a crashing guest's last words are kept, and a killed VMM loses at most
/// a partial line.
pub struct ConsoleSinks {
    sinks: Vec<Box<dyn Write + Send>>,
    pending: Vec<u8>,
    /// When the partial line held in `pending` began.
    pending_since: Option<Instant>,
}

impl ConsoleSinks {
    /// Console output to `sinks`.
    pub fn new(sinks: Vec<Box<dyn Write + Send>>) -> Self {
        Self { sinks, pending: Vec::with_capacity(OUTPUT_BUFFER), pending_since: None }
    }

    /// Writes what is held to every sink. A sink that fails (a closed pipe, a full disk) is
    /// dropped; the guest keeps running.
    fn write_out(&mut self) {
        self.pending_since = None;
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

    /// Writes out a partial line that has waited [`OUTPUT_LINGER`] or longer.
    fn write_out_if_stale(&mut self) {
        if self.pending_since.is_some_and(|since| since.elapsed() >= OUTPUT_LINGER) {
            self.write_out();
        }
    }
}

impl Write for ConsoleSinks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if buf.contains(&b'\n') || self.pending.len() >= OUTPUT_BUFFER {
            self.write_out();
        } else if self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
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

    /// Writes out the output held back, a partial line included: the VM has ended.
    pub fn write_out_held(&self) {
        self.lock().writer_mut().write_out();
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
        let mut serial = self.lock();
        serial.writer_mut().write_out_if_stale();
        complete_byte_read(data, serial.read(offset as u8));
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(value) = data.first() {
            let mut serial = self.lock();
            if let Err(e) = serial.write(offset as u8, *value) {
                tracing::warn!(error = ?e, "serial write failed");
            }
            let out = serial.writer_mut();
            match offset {
                IER_OFFSET => out.write_out(),
                THR_OFFSET => {}
                _ => out.write_out_if_stale(),
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
        let serial = SerialConsole::new(IrqLine(irq.try_clone().unwrap()), ConsoleSinks::new(out));
        (serial, irq)
    }

    fn print(serial: &SerialConsole, text: &[u8]) {
        for byte in text {
            serial.write(0, &[*byte]);
        }
    }

    /// Makes the partial line held look as if it began at `began`.
    fn age_partial_line(serial: &SerialConsole, began: Instant) {
        serial.lock().writer_mut().pending_since = Some(began);
    }

    #[test]
    fn output_leaves_by_the_line_and_a_partial_line_when_the_burst_ends() {
        let out = Shared::default();
        let (serial, _irq) = console(vec![Box::new(out.clone())]);
        let written = || out.0.lock().unwrap().clone();
        let mut lsr = [0u8];
        print(&serial, b"one\nlog");
        assert_eq!(written(), b"one\n", "a complete line at once");
        print(&serial, b"in: ");
        assert_eq!(written(), b"one\n", "bytes of a partial line wait");
        serial.write(IER_OFFSET, &[0]);
        assert_eq!(written(), b"one\nlogin: ", "the prompt, once the driver stops transmitting");
        print(&serial, b"x");
        age_partial_line(&serial, Instant::now() + Duration::from_secs(3600));
        serial.read(5, &mut lsr);
        assert_eq!(written(), b"one\nlogin: ", "a fresh partial line waits through a poll");
        age_partial_line(&serial, Instant::now() - OUTPUT_LINGER);
        serial.read(5, &mut lsr);
        assert_eq!(written(), b"one\nlogin: x", "a stale one leaves at the next poll");
        // A line longer than the buffer leaves in buffer-sized pieces; the rest at the end.
        print(&serial, &vec![b'y'; OUTPUT_BUFFER + 5]);
        assert_eq!(written().len(), 12 + OUTPUT_BUFFER);
        serial.write_out_held();
        assert_eq!(written().len(), 12 + OUTPUT_BUFFER + 5);
        print(&serial, b"z");
        drop(serial);
        assert_eq!(written().len(), 12 + OUTPUT_BUFFER + 6, "held output leaves when the console goes");
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
