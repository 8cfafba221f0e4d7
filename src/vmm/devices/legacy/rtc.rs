//! The CMOS real-time clock (a Motorola MC146818 as PCs have it) at ports 0x70 (index) and
//! 0x71 (data), with its 128 bytes of CMOS memory.
//!
//! Linux reads the wall clock here and registers `rtc_cmos` (`/dev/rtc0`, `hwclock`). A
//! machine that leaves these ports unanswered costs every boot seconds: the kernel polls the
//! update-in-progress bit, which an unclaimed port reads as set, until it gives up.
//!
//! The clock runs on the host's: the guest sees host time (UTC) plus an offset that changes
//! only when the guest sets the clock. Time reads follow register B (binary or BCD, 24- or
//! 12-hour) and register A's update-in-progress bit is set during the last 244 µs of each
//! second, as on the chip, so a guest waiting for an update sees one. There are no
//! interrupts (alarm, update and periodic): the DSDT entry gives no IRQ, which Linux takes
//! as an RTC without alarms. Nothing a guest writes can make the device fail: bad dates it
//! writes are kept in CMOS and ignored by the clock.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::state::clock::{self, DateTime};
use crate::vmm::devices::{complete_byte_read, BusDevice};

/// The index port; the data port follows it.
pub const RTC_PORT: u16 = 0x70;
/// Ports claimed: index and data.
pub const RTC_PORT_COUNT: u16 = 2;
/// The CMOS byte holding the century (named in the FADT, as PC firmware does).
pub const CENTURY_REGISTER: u8 = 0x32;

// Time and status registers.
const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;

const TIME_REGISTERS: [u8; 8] =
    [SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY_REGISTER];

/// Register A: update in progress.
const A_UIP: u8 = 0x80;
/// Register A: the divider bits, and the value meaning "32.768 kHz crystal, running".
const A_DIVIDER_MASK: u8 = 0x70;
const A_DIVIDER_RUNNING: u8 = 0x20;
/// Register A at power on: running, periodic rate 1024 Hz.
const A_DEFAULT: u8 = 0x26;
/// Register B: updates halted while the guest sets the clock.
const B_SET: u8 = 0x80;
/// Register B: binary (not BCD) values.
const B_BINARY: u8 = 0x04;
/// Register B: 24-hour (not 12-hour) mode.
const B_24_HOUR: u8 = 0x02;
/// Register B at power on, as PC firmware leaves it: BCD, 24-hour.
const B_DEFAULT: u8 = B_24_HOUR;
/// Register D: the battery is good, RAM and time valid.
const D_VALID: u8 = 0x80;
/// 12-hour mode: the hour byte's PM flag.
const HOUR_PM: u8 = 0x80;
/// How long before each second's update UIP reads as set (the chip's 244 µs).
const UPDATE_WARNING: Duration = Duration::from_micros(244);

/// A source of the host's wall-clock time, as a duration since the Unix epoch.
pub type Clock = Box<dyn Fn() -> Duration + Send + Sync>;

fn host_clock() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// 1 (Sunday) to 7, as the chip counts.
fn day_of_week(time: DateTime) -> u32 {
    clock::weekday(clock::days_from_civil(time.year, time.month, time.day)) + 1
}

struct RtcState {
    index: u8,
    cmos: [u8; 128],
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// While register B's SET bit is held: the time the guest is writing, in CMOS bytes.
    setting: bool,
}

/// The MC146818 real-time clock and CMOS memory.
pub struct Rtc {
    state: Mutex<RtcState>,
    clock: Clock,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::with_clock(Box::new(host_clock))
    }
}

impl Rtc {
    /// An RTC whose time comes from `clock` (tests pass their own).
    pub fn with_clock(clock: Clock) -> Self {
        let mut cmos = [0u8; 128];
        cmos[usize::from(REG_A)] = A_DEFAULT;
        cmos[usize::from(REG_B)] = B_DEFAULT;
        Self { state: Mutex::new(RtcState { index: 0, cmos, offset: 0, setting: false }), clock }
    }

    fn read_register(&self, state: &RtcState, register: u8) -> u8 {
        let stored = state.cmos[usize::from(register)];
        let mode = state.cmos[usize::from(REG_B)];
        match register {
            _ if TIME_REGISTERS.contains(&register) && !state.setting => {
                let now = (self.clock)();
                let time = DateTime::from_unix(now.as_secs() as i64 + state.offset);
                encode_time_register(register, time, mode)
            }
            REG_A => {
                let now = (self.clock)();
                let running = stored & A_DIVIDER_MASK == A_DIVIDER_RUNNING && !state.setting;
                let updating =
                    running && now.subsec_nanos() >= 1_000_000_000 - UPDATE_WARNING.as_nanos() as u32;
                (stored & !A_UIP) | if updating { A_UIP } else { 0 }
            }
            // No interrupt sources, so no flags; reading would clear them.
            REG_C => 0,
            REG_D => D_VALID,
            _ => stored,
        }
    }

    fn write_register(&self, state: &mut RtcState, register: u8, value: u8) {
        match register {
            REG_B => {
                let was_setting = state.setting;
                // While setting, the time bytes hold what the guest writes: start from now.
                if value & B_SET != 0 && !was_setting {
                    for time_register in TIME_REGISTERS {
                        state.cmos[usize::from(time_register)] = self.read_register(state, time_register);
                    }
                }
                state.cmos[usize::from(REG_B)] = value;
                state.setting = value & B_SET != 0;
                if was_setting && !state.setting {
                    self.commit_time(state);
                }
            }
            REG_A => state.cmos[usize::from(REG_A)] = value & !A_UIP,
            REG_C | REG_D => {}
            _ if TIME_REGISTERS.contains(&register) && !state.setting => {
                // A write while the clock runs sets that field at once.
                for time_register in TIME_REGISTERS {
                    state.cmos[usize::from(time_register)] = self.read_register(state, time_register);
                }
                state.cmos[usize::from(register)] = value;
                self.commit_time(state);
            }
            _ => state.cmos[usize::from(register)] = value,
        }
    }

    /// Takes the time the guest wrote into the CMOS time bytes as the clock's new time.
    fn commit_time(&self, state: &mut RtcState) {
        let byte = |register: u8| state.cmos[usize::from(register)];
        let mode = byte(REG_B);
        let field = |register: u8| decode(byte(register), mode);
        let hour = byte(HOURS);
        let hour = if mode & B_24_HOUR != 0 {
            field(HOURS)
        } else {
            // 12-hour mode: 12 AM is hour 0, 12 PM is hour 12.
            decode(hour & !HOUR_PM, mode) % 12 + if hour & HOUR_PM != 0 { 12 } else { 0 }
        };
        let time = DateTime {
            year: i64::from(field(CENTURY_REGISTER)) * 100 + i64::from(field(YEAR)),
            month: field(MONTH),
            day: field(DAY_OF_MONTH),
            hour,
            minute: field(MINUTES),
            second: field(SECONDS),
        };
        match time.to_unix() {
            Some(seconds) => state.offset = seconds - (self.clock)().as_secs() as i64,
            None => tracing::debug!(?time, "the guest set an invalid RTC time; the clock keeps its own"),
        }
    }
}

/// The byte the chip shows for a time register in `mode` (register B).
fn encode_time_register(register: u8, time: DateTime, mode: u8) -> u8 {
    let value = match register {
        SECONDS => time.second,
        MINUTES => time.minute,
        HOURS if mode & B_24_HOUR != 0 => time.hour,
        HOURS => {
            let twelve = if time.hour % 12 == 0 { 12 } else { time.hour % 12 };
            let pm = if time.hour >= 12 { HOUR_PM } else { 0 };
            return encode(twelve, mode) | pm;
        }
        DAY_OF_WEEK => day_of_week(time),
        DAY_OF_MONTH => time.day,
        MONTH => time.month,
        YEAR => time.year.rem_euclid(100) as u32,
        _ => time.year.div_euclid(100).rem_euclid(100) as u32,
    };
    encode(value, mode)
}

/// `value` (below 100) in binary or BCD, as register B says.
fn encode(value: u32, mode: u8) -> u8 {
    let value = value % 100;
    if mode & B_BINARY != 0 {
        value as u8
    } else {
        (((value / 10) << 4) | (value % 10)) as u8
    }
}

/// A byte the guest wrote, as a number; BCD digits above 9 give values the clock rejects.
fn decode(byte: u8, mode: u8) -> u32 {
    if mode & B_BINARY != 0 {
        u32::from(byte)
    } else {
        u32::from(byte >> 4) * 10 + u32::from(byte & 0x0f)
    }
}

impl BusDevice for Rtc {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let Ok(state) = self.state.lock() else { return data.fill(0xff) };
        let value = match offset {
            // The index register is write-only on the chip.
            0 => 0xff,
            _ => self.read_register(&state, state.index),
        };
        complete_byte_read(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (Ok(mut state), Some(&value)) = (self.state.lock(), data.first()) else { return };
        match offset {
            // Bit 7 masks NMIs on a PC; there are none to mask here.
            0 => state.index = value & 0x7f,
            _ => {
                let register = state.index;
                self.write_register(&mut state, register, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// 2026-11-30 20:07:09 UTC, a Monday.
    const NOW: u64 = 1_796_069_229;

    fn rtc_at(nanos: Arc<AtomicU64>) -> Rtc {
        Rtc::with_clock(Box::new(move || Duration::from_nanos(nanos.load(Ordering::Relaxed))))
    }

    fn fixed_rtc() -> (Rtc, Arc<AtomicU64>) {
        let nanos = Arc::new(AtomicU64::new(NOW * 1_000_000_000));
        (rtc_at(nanos.clone()), nanos)
    }

    fn read(rtc: &Rtc, register: u8) -> u8 {
        rtc.write(0, &[register]);
        let mut data = [0u8];
        rtc.read(1, &mut data);
        data[0]
    }

    fn write(rtc: &Rtc, register: u8, value: u8) {
        rtc.write(0, &[register]);
        rtc.write(1, &[value]);
    }

    #[test]
    fn the_day_of_week_counts_from_sunday_as_1() {
        assert_eq!(day_of_week(DateTime::from_unix(NOW as i64)), 2, "Monday is day 2");
    }

    #[test]
    fn reads_host_time_in_bcd_24_hour_by_default() {
        let (rtc, _) = fixed_rtc();
        let got: Vec<u8> = TIME_REGISTERS.iter().map(|&r| read(&rtc, r)).collect();
        // seconds, minutes, hours, day of week, day, month, year, century
        assert_eq!(got, vec![0x09, 0x07, 0x20, 0x02, 0x30, 0x11, 0x26, 0x20]);
        assert_eq!(read(&rtc, REG_B), B_24_HOUR);
        assert_eq!(read(&rtc, REG_D), D_VALID);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let (rtc, _) = fixed_rtc();
        write(&rtc, REG_B, B_BINARY);
        assert_eq!((read(&rtc, HOURS), read(&rtc, MINUTES), read(&rtc, YEAR)), (8 | HOUR_PM, 7, 26));
        write(&rtc, REG_B, 0);
        assert_eq!(read(&rtc, HOURS), 0x08 | HOUR_PM);
    }

    #[test]
    fn update_in_progress_only_just_before_each_second() {
        let (rtc, nanos) = fixed_rtc();
        assert_eq!(read(&rtc, REG_A), A_DEFAULT);
        nanos.store(NOW * 1_000_000_000 + 999_900_000, Ordering::Relaxed);
        assert_eq!(read(&rtc, REG_A), A_DEFAULT | A_UIP);
        // A halted divider never updates.
        write(&rtc, REG_A, 0x76);
        assert_eq!(read(&rtc, REG_A), 0x76);
    }

    #[test]
    fn the_guest_sets_the_clock_and_it_keeps_running() {
        let (rtc, nanos) = fixed_rtc();
        write(&rtc, REG_B, B_SET | B_24_HOUR | B_BINARY);
        // Frozen while SET is held, whatever the host clock does.
        nanos.fetch_add(5_000_000_000, Ordering::Relaxed);
        assert_eq!(read(&rtc, SECONDS), 9);
        for (register, value) in [(YEAR, 99), (CENTURY_REGISTER, 19), (MONTH, 12), (DAY_OF_MONTH, 31)] {
            write(&rtc, register, value);
        }
        for (register, value) in [(HOURS, 23), (MINUTES, 59), (SECONDS, 58)] {
            write(&rtc, register, value);
        }
        write(&rtc, REG_B, B_24_HOUR | B_BINARY);
        nanos.fetch_add(3_000_000_000, Ordering::Relaxed);
        let got: Vec<u8> = TIME_REGISTERS.iter().map(|&r| read(&rtc, r)).collect();
        // 1999-12-31 23:59:58 plus three seconds: 2000-01-01 00:00:01, a Saturday.
        assert_eq!(got, vec![1, 0, 0, 7, 1, 1, 0, 20]);
    }

    #[test]
    fn a_12_hour_time_written_in_bcd() {
        let (rtc, _) = fixed_rtc();
        write(&rtc, REG_B, B_SET);
        write(&rtc, HOURS, 0x12); // 12 AM: midnight
        write(&rtc, REG_B, 0);
        write(&rtc, REG_B, B_24_HOUR);
        assert_eq!(read(&rtc, HOURS), 0x00);
        write(&rtc, REG_B, B_SET);
        write(&rtc, HOURS, 0x07 | HOUR_PM);
        write(&rtc, REG_B, 0);
        write(&rtc, REG_B, B_24_HOUR);
        assert_eq!(read(&rtc, HOURS), 0x19);
    }

    #[test]
    fn invalid_times_and_stray_accesses_change_nothing() {
        let (rtc, _) = fixed_rtc();
        write(&rtc, REG_B, B_SET | B_24_HOUR);
        write(&rtc, MONTH, 0x13);
        write(&rtc, DAY_OF_MONTH, 0xff);
        write(&rtc, REG_B, B_24_HOUR);
        assert_eq!((read(&rtc, MONTH), read(&rtc, DAY_OF_MONTH)), (0x11, 0x30));
        // A read-only register, NMI mask bit in the index, a wide access, an empty one.
        write(&rtc, REG_D, 0);
        assert_eq!(read(&rtc, 0x80 | REG_D), D_VALID);
        let mut wide = [0xaa; 4];
        rtc.read(1, &mut wide);
        assert_eq!(wide, [D_VALID, 0, 0, 0]);
        rtc.write(1, &[]);
        // CMOS memory keeps what is written.
        write(&rtc, 0x40, 0x5a);
        assert_eq!(read(&rtc, 0x40), 0x5a);
    }

    #[test]
    fn the_default_clock_is_the_hosts() {
        let rtc = Rtc::default();
        write(&rtc, REG_B, B_24_HOUR | B_BINARY);
        let host = DateTime::from_unix(host_clock().as_secs() as i64);
        let year = i64::from(read(&rtc, CENTURY_REGISTER)) * 100 + i64::from(read(&rtc, YEAR));
        assert!((year - host.year).abs() <= 1, "year {year}, host {}", host.year);
    }
}
