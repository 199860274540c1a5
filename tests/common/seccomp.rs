//! Failure injection: a seccomp filter that makes chosen system calls fail
//! with a chosen `errno`, so a test can see how the code under test
//! handles a failure the kernel would rarely produce on its own (an
//! `mprotect` refused, an `munmap` refused, `getrandom` failing).
//!
//! Meant for a forked child: a filter cannot be removed, and it also
//! applies to the child's own children.

use std::io;

/// One call to refuse: system call `nr`, optionally only when its range
/// argument `[args[0], args[0] + args[1])` contains `containing` (the
/// `munmap`/`mprotect`/`madvise` shape), and optionally only when its
/// third argument is `prot` (the `mprotect` protection).
#[derive(Clone, Copy, Debug)]
pub struct Refuse {
    pub nr: libc::c_long,
    pub containing: Option<usize>,
    pub prot: Option<u32>,
    pub errno: i32,
}

impl Refuse {
    /// Every call `nr`.
    pub fn all(nr: libc::c_long, errno: i32) -> Self {
        Refuse {
            nr,
            containing: None,
            prot: None,
            errno,
        }
    }

    /// Calls `nr` whose range (first two arguments) contains `addr`.
    pub fn range(nr: libc::c_long, addr: usize, errno: i32) -> Self {
        Refuse {
            containing: Some(addr),
            ..Self::all(nr, errno)
        }
    }

    /// As `range`, and only with protection `prot` (the third argument).
    pub fn protect(addr: usize, prot: i32, errno: i32) -> Self {
        Refuse {
            prot: Some(prot as u32),
            ..Self::range(libc::SYS_mprotect, addr, errno)
        }
    }
}

// Classic BPF (linux/bpf_common.h, linux/seccomp.h, linux/audit.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const MEM: u16 = 0x60;
const SUB: u16 = 0x10;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGE: u16 = 0x30;
const K: u16 = 0x00;
const X: u16 = 0x08;
const TAX: u16 = 0x00;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

/// Offsets in `struct seccomp_data`: `nr`, `arch`, then `args[i]` at
/// `16 + 8 i` (low word first: little endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

/// An instruction whose jump targets are labels, resolved at the end.
enum Ins {
    Stmt(u16, u32),
    /// Conditional jump: code, constant, label if true, label if false.
    Jump(u16, u32, usize, usize),
    /// Unconditional jump to a label.
    Goto(usize),
    Label(usize),
}

struct Asm {
    ins: Vec<Ins>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.ins.push(Ins::Stmt(code, k));
    }

    fn jump(&mut self, code: u16, k: u32, yes: usize, no: usize) {
        self.ins.push(Ins::Jump(code, k, yes, no));
    }

    fn place(&mut self, l: usize) {
        self.ins.push(Ins::Label(l));
    }

    fn finish(self) -> Vec<libc::sock_filter> {
        let mut at = vec![usize::MAX; self.labels];
        let mut n = 0;
        for i in &self.ins {
            match i {
                Ins::Label(l) => at[*l] = n,
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for i in &self.ins {
            let here = out.len() + 1;
            let off = |l: usize| {
                let d = at[l] - here;
                u8::try_from(d).expect("seccomp filter jump too long")
            };
            match *i {
                Ins::Stmt(code, k) => out.push(libc::sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Ins::Jump(code, k, yes, no) => out.push(libc::sock_filter {
                    code,
                    jt: off(yes),
                    jf: off(no),
                    k,
                }),
                Ins::Goto(l) => out.push(libc::sock_filter {
                    code: JMP | JA | K,
                    jt: 0,
                    jf: 0,
                    k: (at[l] - here) as u32,
                }),
                Ins::Label(_) => {}
            }
        }
        out
    }
}

/// Installs a filter refusing the calls `rules` describe (each with its
/// errno); everything else is allowed. For a forked child only.
pub fn refuse(rules: &[Refuse]) -> io::Result<()> {
    let mut a = Asm {
        ins: Vec::new(),
        labels: 0,
    };
    let allow = a.label();
    let next_arch = a.label();
    a.stmt(LD | W | ABS, ARCH);
    a.jump(JMP | JEQ | K, AUDIT_ARCH_X86_64, next_arch, allow);
    a.place(next_arch);
    for r in rules {
        let skip = a.label();
        let refuse = a.label();
        let matched_range = a.label();
        a.stmt(LD | W | ABS, NR);
        let is_nr = a.label();
        a.jump(JMP | JEQ | K, r.nr as u32, is_nr, skip);
        a.place(is_nr);
        if let Some(addr) = r.containing {
            let (lo, hi) = (addr as u32, (addr >> 32) as u32);
            // d = addr - args[0] as 64 bits: M[0] = low word, A = high.
            a.stmt(LD | W | ABS, arg_lo(0));
            a.stmt(MISC | TAX, 0);
            a.stmt(LD | IMM, lo);
            a.stmt(ALU | SUB | X, 0);
            a.stmt(ST, 0);
            // Borrow from the low word: M[1] = (lo < args[0].lo).
            let no_borrow = a.label();
            let borrow = a.label();
            let borrowed = a.label();
            a.stmt(LD | IMM, lo);
            a.jump(JMP | JGE | X, 0, no_borrow, borrow);
            a.place(no_borrow);
            a.stmt(LD | IMM, 0);
            a.ins.push(Ins::Goto(borrowed));
            a.place(borrow);
            a.stmt(LD | IMM, 1);
            a.place(borrowed);
            a.stmt(ST, 1);
            // A = hi - args[0].hi - borrow; zero iff 0 <= d < 2^32.
            a.stmt(LD | W | ABS, arg_hi(0));
            a.stmt(MISC | TAX, 0);
            a.stmt(LD | IMM, hi);
            a.stmt(ALU | SUB | X, 0);
            a.stmt(LDX | W | MEM, 1);
            a.stmt(ALU | SUB | X, 0);
            let small = a.label();
            a.jump(JMP | JEQ | K, 0, small, skip);
            a.place(small);
            // A length of 4 GiB or more contains it; else compare d.lo.
            let short = a.label();
            a.stmt(LD | W | ABS, arg_hi(1));
            a.jump(JMP | JEQ | K, 0, short, matched_range);
            a.place(short);
            a.stmt(LD | W | ABS, arg_lo(1));
            a.stmt(MISC | TAX, 0);
            a.stmt(LD | W | MEM, 0);
            a.jump(JMP | JGE | X, 0, skip, matched_range);
        }
        a.place(matched_range);
        if let Some(prot) = r.prot {
            a.stmt(LD | W | ABS, arg_lo(2));
            a.jump(JMP | JEQ | K, prot, refuse, skip);
        }
        a.place(refuse);
        a.stmt(RET | K, RET_ERRNO | (r.errno as u32 & 0xffff));
        a.place(skip);
    }
    a.place(allow);
    a.stmt(RET | K, RET_ALLOW);
    let filter = a.finish();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl; no pointers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `prog` points at `filter`, alive across the call (the kernel
    // copies the program).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
