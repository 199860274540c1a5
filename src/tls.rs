//! Thread-local words in the initial-exec TLS model: one load from the
//! thread pointer, in a Rust program and in the C ABI's shared library
//! alike.
//!
//! Rust's `thread_local!` compiles to the general-dynamic model in
//! position-independent code, which the linker relaxes for an executable
//! but not for a shared library: in `libmapalloc.so` every access was a
//! call to `__tls_get_addr`, 33 of the 131 instructions of a
//! `malloc`/`free` pair under `LD_PRELOAD` (callgrind). Stable Rust has no
//! switch for the model, so the words are declared here in assembly and
//! reached with the initial-exec sequence (`fs:0` plus the GOT's offset),
//! as C allocators do (`tls_model("initial-exec")`). That needs the
//! library's TLS in the static block: true for the executable and for
//! `LD_PRELOAD`, and glibc keeps room for a `dlopen`ed library or two.
//!
//! Miri runs no inline assembly; there the words are `thread_local!`s.

/// Declares `fn $name() -> *mut usize`: the calling thread's word of TLS
/// named `$sym` (unique in the program), zero in every new thread.
macro_rules! tls_word {
    ($(#[$doc:meta])* $vis:vis fn $name:ident = $sym:literal) => {
        #[cfg(not(miri))]
        core::arch::global_asm!(
            ".pushsection .tbss,\"awT\",@nobits",
            ".balign 8",
            concat!(".globl ", $sym),
            concat!(".hidden ", $sym),
            concat!(".type ", $sym, ",@object"),
            concat!(".size ", $sym, ",8"),
            concat!($sym, ":"),
            ".zero 8",
            ".popsection",
        );

        $(#[$doc])*
        #[inline(always)]
        $vis fn $name() -> *mut usize {
            #[cfg(not(miri))]
            {
                let p: usize;
                // SAFETY: the initial-exec sequence of the x86_64 TLS ABI:
                // `fs:0` holds the thread pointer, and the GOT entry the
                // word's offset from it (the linker fills it in, or turns
                // the sequence into a constant in an executable). It gives
                // the same address for a given thread all its life, so it is
                // declared `nomem`: the compiler may then compute it once
                // per function, as LLVM does for Rust's own `thread_local!`
                // (an inlined alloc+free pair: 52 -> 48 instructions).
                unsafe {
                    core::arch::asm!(
                        concat!("mov {p}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "add {p}, qword ptr fs:[0]",
                        p = out(reg) p,
                        options(pure, nomem, nostack),
                    )
                };
                p as *mut usize
            }
            #[cfg(miri)]
            {
                std::thread_local! {
                    static WORD: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
                }
                WORD.with(|w| w.as_ptr())
            }
        }
    };
}

pub(crate) use tls_word;
