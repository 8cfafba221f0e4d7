//! Tiny test guests: a few dozen hand-encoded x86 instructions, packaged as an ELF vmlinux
//! or a minimal bzImage, that `nuage-vmm` loads like a real kernel. They run in
//! microseconds even on software KVM, so they test the VMM's boot path, devices and exits.

/// Guest-physical address where the loaders put the code (the 64-bit entry point).
pub const LOAD_ADDR: u64 = 0x10_0000;

/// A tiny x86 assembler: only what the tests need, encoded by hand.
#[derive(Default, Clone)]
pub struct Asm {
    code: Vec<u8>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.code
    }

    /// Current length, for jump targets.
    pub fn here(&self) -> usize {
        self.code.len()
    }

    /// Raw bytes.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.code.extend_from_slice(bytes);
        self
    }

    /// 64-bit mode: `mov dx, port` (operand-size prefix + imm16).
    pub fn mov_dx(self, port: u16) -> Self {
        let [lo, hi] = port.to_le_bytes();
        self.raw(&[0x66, 0xba, lo, hi])
    }

    /// `mov al, imm8`.
    pub fn mov_al(self, value: u8) -> Self {
        self.raw(&[0xb0, value])
    }

    /// `out dx, al`.
    pub fn out_dx_al(self) -> Self {
        self.raw(&[0xee])
    }

    /// `in al, dx`.
    pub fn in_al_dx(self) -> Self {
        self.raw(&[0xec])
    }

    /// Writes `value` to `port` (64-bit mode).
    pub fn outb(self, port: u16, value: u8) -> Self {
        self.mov_dx(port).mov_al(value).out_dx_al()
    }

    /// Prints `text` on COM1.
    pub fn print(self, text: &str) -> Self {
        text.bytes().fold(self.mov_dx(0x3f8), |asm, byte| asm.mov_al(byte).out_dx_al())
    }

    /// Writes AL to COM1 (clobbers DX).
    pub fn print_al(self) -> Self {
        self.mov_dx(0x3f8).out_dx_al()
    }

    /// `mov eax, [addr]` (a 32-bit MMIO read at a 64-bit absolute address).
    pub fn load_eax(self, addr: u64) -> Self {
        self.raw(&[0xa1]).raw(&addr.to_le_bytes())
    }

    /// `mov dword [addr], value` through EAX (a 32-bit MMIO write).
    pub fn store_dword(self, addr: u64, value: u32) -> Self {
        self.raw(&[0xb8]).raw(&value.to_le_bytes()).raw(&[0xa3]).raw(&addr.to_le_bytes())
    }

    /// `shr eax, bits`.
    pub fn shr_eax(self, bits: u8) -> Self {
        self.raw(&[0xc1, 0xe8, bits])
    }

    /// `cpuid` with EAX = `leaf`, ECX = 0.
    pub fn cpuid(self, leaf: u32) -> Self {
        let mut asm = self.raw(&[0xb8]).raw(&leaf.to_le_bytes());
        asm = asm.raw(&[0x31, 0xc9]); // xor ecx, ecx
        asm.raw(&[0x0f, 0xa2])
    }

    /// Powers off through the ACPI sleep control register (S5).
    pub fn acpi_poweroff(self) -> Self {
        self.outb(0x600, 0x34)
    }

    /// Polls the i8042 keyboard controller until it delivers `scancode` (clobbers AL, DX).
    pub fn wait_for_scancode(self, scancode: u8) -> Self {
        self.mov_dx(0x64)
            .in_al_dx()
            .raw(&[0xa8, 0x01]) // test al, 1: output buffer full?
            .raw(&[0x74, 0xf7]) // jz back to the start (-9)
            .mov_dx(0x60)
            .in_al_dx()
            .raw(&[0x3c, scancode]) // cmp al, scancode
            .raw(&[0x75, 0xee]) // jne back to the start (-18)
    }

    /// `jmp rel32` back (or on) to offset `target` of this code.
    pub fn jump_to(self, target: usize) -> Self {
        let from = self.here() as i64 + 5;
        let rel = i32::try_from(target as i64 - from).expect("jump within 2 GiB");
        self.raw(&[0xe9]).raw(&rel.to_le_bytes())
    }

    /// `jmp $`: spin forever.
    pub fn spin(self) -> Self {
        self.raw(&[0xeb, 0xfe])
    }

    /// `cli; hlt`.
    pub fn cli_hlt(self) -> Self {
        self.raw(&[0xfa, 0xf4])
    }
}

/// Packages 64-bit `code` as an ELF64 executable with one PT_LOAD segment at [`LOAD_ADDR`].
pub fn elf_kernel(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const CODE_OFFSET: usize = 0x1000;
    let mut f = vec![0u8; CODE_OFFSET];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // EM_X86_64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, LOAD_ADDR); // e_entry
    put64(&mut f, 32, EHDR as u64); // e_phoff
    put16(&mut f, 52, EHDR as u16); // e_ehsize
    put16(&mut f, 54, PHDR as u16); // e_phentsize
    put16(&mut f, 56, 1); // e_phnum
    let ph = EHDR;
    put32(&mut f, ph, 1); // PT_LOAD
    put32(&mut f, ph + 4, 5); // R + X
    put64(&mut f, ph + 8, CODE_OFFSET as u64); // p_offset
    put64(&mut f, ph + 16, LOAD_ADDR); // p_vaddr
    put64(&mut f, ph + 24, LOAD_ADDR); // p_paddr
    put64(&mut f, ph + 32, code.len() as u64); // p_filesz
    put64(&mut f, ph + 40, code.len() as u64); // p_memsz
    put64(&mut f, ph + 48, 0x1000); // p_align
    f.extend_from_slice(code);
    f
}

/// Packages 64-bit `code` as a minimal bzImage (boot protocol 2.15, XLF_KERNEL_64): one
/// setup sector, then a protected-mode payload whose offset 0x200 is the 64-bit entry.
pub fn bzimage_kernel(code: &[u8]) -> Vec<u8> {
    let setup_sects = 1u8;
    let mut f = vec![0u8; (usize::from(setup_sects) + 1) * 512];
    f[0x1f1] = setup_sects;
    put16(&mut f, 0x1fe, 0xaa55);
    f[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut f, 0x206, 0x020f); // version
    f[0x211] = 0x01; // loadflags: LOADED_HIGH
    put32(&mut f, 0x214, LOAD_ADDR as u32); // code32_start
    put32(&mut f, 0x22c, 0x37ff_ffff); // initrd_addr_max
    put16(&mut f, 0x236, 0x1); // xloadflags: XLF_KERNEL_64
    put32(&mut f, 0x238, 2047); // cmdline_size
    let mut payload = vec![0xf4u8; 0x200]; // 32-bit entry: hlt
    payload.extend_from_slice(code);
    put32(&mut f, 0x260, (payload.len() as u32).next_multiple_of(4096)); // init_size
    f.extend_from_slice(&payload);
    f
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
