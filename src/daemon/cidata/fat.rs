//! A small FAT12 filesystem writer: one root directory of files with long (VFAT) names,
//! and a volume label. This is the format of NoCloud config drives (`cidata`), which
//! cloud-init and any Linux guest with `vfat` read; the image is built in memory, so the
//! daemon needs no `mkfs` on the host.
//!
//! Layout (512-byte sectors, one sector per cluster):
//!
//! ```text
//! 0        boot sector with the BIOS parameter block
//! 1..      two copies of the file allocation table
//! ..       the root directory (fixed size)
//! ..       data clusters, numbered from 2
//! ```

const SECTOR: usize = 512;
/// Sectors in the image: 2 MiB, which keeps the cluster count below FAT12's limit of 4085.
const TOTAL_SECTORS: usize = 4096;
const RESERVED_SECTORS: usize = 1;
const FAT_COPIES: usize = 2;
const ROOT_ENTRIES: usize = 512;
const DIR_ENTRY: usize = 32;
/// Sectors of one FAT: 1.5 bytes for each cluster entry.
const FAT_SECTORS: usize = (TOTAL_SECTORS * 3 / 2).div_ceil(SECTOR);
const ROOT_SECTORS: usize = ROOT_ENTRIES * DIR_ENTRY / SECTOR;
const DATA_START: usize = RESERVED_SECTORS + FAT_COPIES * FAT_SECTORS + ROOT_SECTORS;
const CLUSTERS: usize = TOTAL_SECTORS - DATA_START;
// The kernel tells FAT12 by its cluster count, and every cluster needs its FAT entry.
const _: () = assert!(CLUSTERS < 4085 && FAT_SECTORS * SECTOR * 2 / 3 >= CLUSTERS + 2);
/// FAT12 marks the last cluster of a file with any value from 0xFF8 up.
const END_OF_CHAIN: u16 = 0xFFF;
/// UTF-16 characters one long-name entry carries.
const LFN_CHARS: usize = 13;
/// 1980-01-01, FAT's epoch: the images are reproducible.
const FAT_DATE: u16 = (1 << 5) | 1;

const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LONG_NAME: u8 = 0x0F;

/// Why an image cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FatError {
    /// The files do not fit.
    #[error("config drive: {0} bytes of files do not fit in {max} bytes", max = CLUSTERS * SECTOR)]
    TooLarge(usize),
    /// A name FAT cannot hold.
    #[error("config drive: file name {0:?} must be 1 to 255 printable ASCII characters, without / or \\")]
    BadName(String),
    /// A label FAT cannot hold.
    #[error("config drive: label {0:?} must be 1 to 11 upper-case letters, digits or _")]
    BadLabel(String),
    /// Two files share a name.
    #[error("config drive: two files are named {0:?}")]
    DuplicateName(String),
}

/// Builds a FAT12 image labelled `label` whose root directory holds `files` (name,
/// contents), all read-only.
pub fn build_image(label: &str, files: &[(&str, &[u8])]) -> Result<Vec<u8>, FatError> {
    if label.is_empty()
        || label.len() > 11
        || !label.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(FatError::BadLabel(label.to_owned()));
    }
    for (index, (name, _)) in files.iter().enumerate() {
        let printable = name.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if name.is_empty() || name.len() > 255 || !printable || name.contains(['/', '\\']) {
            return Err(FatError::BadName((*name).to_owned()));
        }
        if files[..index].iter().any(|(other, _)| other.eq_ignore_ascii_case(name)) {
            return Err(FatError::DuplicateName((*name).to_owned()));
        }
    }
    let clusters_needed: usize = files.iter().map(|(_, data)| data.len().div_ceil(SECTOR)).sum();
    let entries_needed: usize =
        1 + files.iter().map(|(name, _)| 1 + name.len().div_ceil(LFN_CHARS)).sum::<usize>();
    if clusters_needed > CLUSTERS || entries_needed > ROOT_ENTRIES {
        return Err(FatError::TooLarge(files.iter().map(|(_, data)| data.len()).sum()));
    }

    let mut image = vec![0u8; TOTAL_SECTORS * SECTOR];
    write_boot_sector(&mut image[..SECTOR], label);
    let mut fat = vec![0u8; FAT_SECTORS * SECTOR];
    // Entries 0 and 1 are reserved: the media byte, then an end-of-chain mark.
    set_fat12(&mut fat, 0, 0xFF8);
    set_fat12(&mut fat, 1, END_OF_CHAIN);
    let mut root = Vec::with_capacity(ROOT_SECTORS * SECTOR);
    root.extend_from_slice(&short_entry(&pad_label(label), ATTR_VOLUME_ID, 0, 0));

    let mut next_cluster = 2usize;
    for (index, (name, data)) in files.iter().enumerate() {
        let first = if data.is_empty() { 0 } else { next_cluster };
        for (offset, chunk) in data.chunks(SECTOR).enumerate() {
            let cluster = next_cluster + offset;
            let start = (DATA_START + cluster - 2) * SECTOR;
            image[start..start + chunk.len()].copy_from_slice(chunk);
            let last = offset + 1 == data.len().div_ceil(SECTOR);
            set_fat12(&mut fat, cluster, if last { END_OF_CHAIN } else { (cluster + 1) as u16 });
        }
        next_cluster += data.len().div_ceil(SECTOR);
        let short = short_name(name, index + 1);
        root.extend(long_name_entries(name, &short));
        root.extend_from_slice(&short_entry(&short, ATTR_READ_ONLY, first as u16, data.len() as u32));
    }

    for copy in 0..FAT_COPIES {
        let start = (RESERVED_SECTORS + copy * FAT_SECTORS) * SECTOR;
        image[start..start + fat.len()].copy_from_slice(&fat);
    }
    let root_start = (RESERVED_SECTORS + FAT_COPIES * FAT_SECTORS) * SECTOR;
    image[root_start..root_start + root.len()].copy_from_slice(&root);
    Ok(image)
}

fn pad_label(label: &str) -> [u8; 11] {
    let mut padded = [b' '; 11];
    padded[..label.len()].copy_from_slice(label.as_bytes());
    padded
}

fn write_boot_sector(sector: &mut [u8], label: &str) {
    let put16 =
        |sector: &mut [u8], at: usize, value: u16| sector[at..at + 2].copy_from_slice(&value.to_le_bytes());
    sector[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]); // jmp over the BPB; never booted
    sector[3..11].copy_from_slice(b"NUAGE   ");
    put16(sector, 11, SECTOR as u16);
    sector[13] = 1; // sectors per cluster
    put16(sector, 14, RESERVED_SECTORS as u16);
    sector[16] = FAT_COPIES as u8;
    put16(sector, 17, ROOT_ENTRIES as u16);
    put16(sector, 19, TOTAL_SECTORS as u16);
    sector[21] = 0xF8; // media: fixed disk
    put16(sector, 22, FAT_SECTORS as u16);
    put16(sector, 24, 32); // sectors per track, heads: geometry nobody uses
    put16(sector, 26, 64);
    sector[36] = 0x80; // drive number
    sector[38] = 0x29; // extended boot signature: the next three fields are valid
    sector[39..43].copy_from_slice(&0x4E55_4147u32.to_le_bytes()); // volume serial
    sector[43..54].copy_from_slice(&pad_label(label));
    sector[54..62].copy_from_slice(b"FAT12   ");
    sector[510] = 0x55;
    sector[511] = 0xAA;
}

/// Sets FAT12 entry `cluster` (12 bits, two entries packed in three bytes).
fn set_fat12(fat: &mut [u8], cluster: usize, value: u16) {
    let at = cluster * 3 / 2;
    if cluster % 2 == 0 {
        fat[at] = value as u8;
        fat[at + 1] = (fat[at + 1] & 0xF0) | ((value >> 8) as u8 & 0x0F);
    } else {
        fat[at] = (fat[at] & 0x0F) | ((value as u8 & 0x0F) << 4);
        fat[at + 1] = (value >> 4) as u8;
    }
}

/// The 8.3 name stored beside a long name: `BASE~N` plus up to three extension
/// characters, unique because `n` is the file's position.
fn short_name(name: &str, n: usize) -> [u8; 11] {
    let clean = |part: &str| -> Vec<u8> {
        part.bytes()
            .filter(|b| *b != b' ' && *b != b'.')
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"!#$%&'()-@^_`{}~".contains(&b) {
                    b.to_ascii_uppercase()
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let (base, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot + 1..]),
        _ => (name, ""),
    };
    let tail = format!("~{n}");
    let mut base = clean(base);
    base.truncate(8 - tail.len());
    base.extend_from_slice(tail.as_bytes());
    let mut ext = clean(ext);
    ext.truncate(3);
    let mut short = [b' '; 11];
    short[..base.len()].copy_from_slice(&base);
    short[8..8 + ext.len()].copy_from_slice(&ext);
    short
}

fn short_entry(name: &[u8; 11], attributes: u8, first_cluster: u16, size: u32) -> [u8; DIR_ENTRY] {
    let mut entry = [0u8; DIR_ENTRY];
    entry[..11].copy_from_slice(name);
    entry[11] = attributes;
    for at in [16, 18, 24] {
        // Creation, access and modification dates.
        entry[at..at + 2].copy_from_slice(&FAT_DATE.to_le_bytes());
    }
    entry[26..28].copy_from_slice(&first_cluster.to_le_bytes());
    entry[28..32].copy_from_slice(&size.to_le_bytes());
    entry
}

/// The checksum of a short name that ties its long-name entries to it.
fn short_name_checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// The long-name entries of `name`, last part first, as they precede the short entry.
fn long_name_entries(name: &str, short: &[u8; 11]) -> Vec<u8> {
    let checksum = short_name_checksum(short);
    let units: Vec<u16> = name.encode_utf16().collect();
    let parts = units.len().div_ceil(LFN_CHARS);
    let mut entries = Vec::with_capacity(parts * DIR_ENTRY);
    for part in (0..parts).rev() {
        // A name that does not fill its last entry ends with NUL, then 0xFFFF padding.
        let mut chars = [0xFFFFu16; LFN_CHARS];
        for (slot, at) in chars.iter_mut().zip(part * LFN_CHARS..) {
            *slot = match at.cmp(&units.len()) {
                std::cmp::Ordering::Less => units[at],
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => 0xFFFF,
            };
        }
        let mut entry = [0u8; DIR_ENTRY];
        entry[0] = (part + 1) as u8 | if part + 1 == parts { 0x40 } else { 0 };
        entry[11] = ATTR_LONG_NAME;
        entry[13] = checksum;
        // The 13 characters sit in three runs: bytes 1-10, 14-25 and 28-31.
        let slots = (1..11).step_by(2).chain((14..26).step_by(2)).chain((28..32).step_by(2));
        for (at, c) in slots.zip(chars) {
            entry[at..at + 2].copy_from_slice(&c.to_le_bytes());
        }
        entries.extend_from_slice(&entry);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a host tool on the image; None when the tool is not installed.
    fn tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
        match std::process::Command::new(program).args(args).output() {
            Ok(output) => Some(output),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("{program} is not installed (dosfstools, mtools): skipping its check");
                None
            }
            Err(e) => panic!("{program}: {e}"),
        }
    }

    #[test]
    fn dosfstools_and_mtools_read_back_the_files() {
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let files: [(&str, &[u8]); 4] = [
            ("meta-data", b"instance-id: i-1\n"),
            ("user-data", &big),
            ("network-config-with-a-long-name.yaml", b"version: 2\n"),
            ("empty", b""),
        ];
        let image = build_image("CIDATA", &files).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cidata.img");
        std::fs::write(&path, &image).unwrap();
        let path = path.to_str().unwrap();
        if let Some(fsck) = tool("fsck.fat", &["-n", "-v", path]) {
            let report = String::from_utf8_lossy(&fsck.stdout);
            assert!(fsck.status.success(), "fsck.fat: {report}{}", String::from_utf8_lossy(&fsck.stderr));
            assert!(report.contains("12 bit entries"), "{report}");
        }
        if let Some(label) = tool("mlabel", &["-s", "-i", path, "::"]) {
            assert!(String::from_utf8_lossy(&label.stdout).contains("CIDATA"));
        }
        for (name, data) in files {
            let target = dir.path().join(format!("out-{name}"));
            let copy = format!("::{name}");
            let Some(out) = tool("mcopy", &["-n", "-i", path, &copy, target.to_str().unwrap()]) else {
                return;
            };
            assert!(out.status.success(), "mcopy {name}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(std::fs::read(&target).unwrap(), data, "{name}");
        }
    }

    #[test]
    fn the_chain_and_names_are_as_the_format_says() {
        let image = build_image("CIDATA", &[("meta-data", &[7u8; 1200])]).unwrap();
        let fat = &image[SECTOR..SECTOR + FAT_SECTORS * SECTOR];
        let entry = |n: usize| {
            let at = n * 3 / 2;
            let pair = u16::from_le_bytes([fat[at], fat[at + 1]]);
            if n % 2 == 0 {
                pair & 0xFFF
            } else {
                pair >> 4
            }
        };
        assert_eq!(
            (entry(0), entry(1), entry(2), entry(3), entry(4), entry(5)),
            (0xFF8, 0xFFF, 3, 4, 0xFFF, 0)
        );
        let root = &image[(DATA_START - ROOT_SECTORS) * SECTOR..];
        assert_eq!(&root[..11], b"CIDATA     ");
        assert_eq!(root[32], 0x41, "one long-name entry, the last");
        assert_eq!(&root[64..75], b"META-D~1   ");
        assert_eq!(root[32 + 13], short_name_checksum(b"META-D~1   "));
        assert_eq!(&image[DATA_START * SECTOR..DATA_START * SECTOR + 4], &[7, 7, 7, 7]);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(build_image("cidata", &[]), Err(FatError::BadLabel("cidata".into())));
        assert_eq!(build_image("A", &[("a/b", b"")]), Err(FatError::BadName("a/b".into())));
        assert_eq!(build_image("A", &[("x", b""), ("X", b"")]), Err(FatError::DuplicateName("X".into())));
        let huge = vec![0u8; 3 << 20];
        assert!(matches!(build_image("A", &[("big", &huge)]), Err(FatError::TooLarge(_))));
    }
}
