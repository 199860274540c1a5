//! `mallinfo`, `mallinfo2` and `malloc_info`: mapalloc's counters
//! (`mapalloc::stats()`) in glibc's shapes, so that a program that watches
//! its own heap through them sees the heap it really uses, not glibc's
//! idle arenas.
//!
//! | field | figure |
//! |---|---|
//! | `arena` | `mapped_bytes`: every byte mapped from the OS (segments, large mappings, caches, metadata) |
//! | `uordblks` | `in_use_bytes`: slab pages handed to heaps plus live large mappings (an upper bound on the bytes the program holds) |
//! | `fordblks` | `mapped_bytes - in_use_bytes` (so `arena == uordblks + fordblks`) |
//! | `hblks` | `large_mappings`: live large blocks, each its own mapping |
//! | `hblkhd` | `large_bytes`: their mapped bytes |
//! | `keepcost` | `large_cached_bytes`: freed large mappings kept for reuse, which `malloc_trim` unmaps at once |
//! | `ordblks`, `smblks`, `usmblks`, `fsmblks` | 0 (no such figure; glibc too reports `usmblks` as 0) |
//!
//! Unlike glibc's, `arena` and `uordblks` include the large mappings:
//! `hblkhd` is the part of `uordblks` that is large blocks, not an
//! addition to it.
//!
//! Nothing here allocates: the XML is formatted into a stack buffer.
//! Writing it with `fwrite` may make stdio allocate the stream's buffer
//! (through our `malloc`), which is allowed: it is not inside an
//! allocation.

use crate::report::Buf;
use core::ffi::c_int;
use mapalloc::Stats;

/// `struct mallinfo2` from the counters.
pub fn mallinfo2(s: &Stats) -> libc::mallinfo2 {
    libc::mallinfo2 {
        arena: s.mapped_bytes,
        ordblks: 0,
        smblks: 0,
        hblks: s.large_mappings,
        hblkhd: s.large_bytes,
        usmblks: 0,
        fsmblks: 0,
        uordblks: s.in_use_bytes,
        fordblks: s.mapped_bytes.saturating_sub(s.in_use_bytes),
        keepcost: s.large_cached_bytes,
    }
}

/// `struct mallinfo` (`int` fields): `mallinfo2`'s figures, each clamped to
/// `INT_MAX` (glibc's own lets them wrap, which is why `mallinfo2` exists).
pub fn mallinfo(s: &Stats) -> libc::mallinfo {
    let m = mallinfo2(s);
    let int = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    libc::mallinfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

/// Room for the whole document (about 800 bytes with 20-digit numbers).
pub const XML_LEN: usize = 1024;

/// Writes `malloc_info`'s XML for `s` into `out`; returns its length, or
/// `None` if it did not fit.
///
/// The shape is glibc's (2.36), element for element, so that parsers of
/// glibc's output read ours: one `<heap nr="0">` for the whole allocator
/// (mapalloc has no arenas), with an empty `<sizes>` (no per-size
/// histogram), then the totals. `total type="rest"` is the free space
/// (`fordblks`, count 0: free blocks are not counted), `total type="mmap"`
/// the large blocks (`hblks`, `hblkhd`), `system` and `aspace` the mapped
/// bytes (`arena`; `max` is the current figure, since no peak is kept).
pub fn xml(s: &Stats, out: &mut [u8]) -> Option<usize> {
    let m = mallinfo2(s);
    let mut b = Buf::new(out);
    let tail = |b: &mut Buf<'_>| {
        b.push(b"<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
        attrs(b, b"<total type=\"rest\" count=\"", 0, m.fordblks);
    };
    let system = |b: &mut Buf<'_>| {
        for (tag, kind) in [
            (&b"system"[..], &b"current"[..]),
            (b"system", b"max"),
            (b"aspace", b"total"),
            (b"aspace", b"mprotect"),
        ] {
            b.push(b"<");
            b.push(tag);
            b.push(b" type=\"");
            b.push(kind);
            b.push(b"\" size=\"");
            b.number(m.arena as u64);
            b.push(b"\"/>\n");
        }
    };
    b.push(b"<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n</sizes>\n");
    tail(&mut b);
    system(&mut b);
    b.push(b"</heap>\n");
    tail(&mut b);
    attrs(&mut b, b"<total type=\"mmap\" count=\"", m.hblks, m.hblkhd);
    system(&mut b);
    b.push(b"</malloc>\n");
    b.fitted().then_some(b.len())
}

/// `<open>COUNT" size="SIZE"/>` and a newline.
fn attrs(b: &mut Buf<'_>, open: &[u8], count: usize, size: usize) {
    b.push(open);
    b.number(count as u64);
    b.push(b"\" size=\"");
    b.number(size as u64);
    b.push(b"\"/>\n");
}

/// `malloc_info(options, fp)`: 0, or the `errno` value to set with -1.
/// `options` must be 0 (glibc: `EINVAL` otherwise); a null `fp` is
/// `EINVAL` too, where glibc would crash. A short write returns the error
/// `fwrite` left in `errno` (`EIO` if it left none).
///
/// # Safety
/// `fp` is null or an open `FILE *`.
pub unsafe fn malloc_info(options: c_int, fp: *mut libc::FILE) -> Result<(), c_int> {
    if options != 0 || fp.is_null() {
        return Err(libc::EINVAL);
    }
    let mut buf = [0u8; XML_LEN];
    let len = xml(&mapalloc::stats(), &mut buf).ok_or(libc::EIO)?;
    // SAFETY: the caller's contract for `fp`; `buf[..len]` is initialised.
    let wrote = unsafe { libc::fwrite(buf.as_ptr().cast(), 1, len, fp) };
    if wrote == len {
        return Ok(());
    }
    // SAFETY: glibc's errno location is valid for the calling thread.
    let e = unsafe { *libc::__errno_location() };
    Err(if e != 0 { e } else { libc::EIO })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        Stats {
            mapped_bytes: 50 << 20,
            in_use_bytes: 20 << 20,
            slab_bytes: 4 << 20,
            large_bytes: 16 << 20,
            large_cached_bytes: 8 << 20,
            large_mappings: 3,
            ..Stats::default()
        }
    }

    #[test]
    fn mallinfo2_takes_the_counters() {
        let m = mallinfo2(&sample());
        assert_eq!(m.arena, 50 << 20);
        assert_eq!(m.uordblks, 20 << 20);
        assert_eq!(m.fordblks, 30 << 20);
        assert_eq!(m.arena, m.uordblks + m.fordblks);
        assert_eq!((m.hblks, m.hblkhd), (3, 16 << 20));
        assert_eq!(m.keepcost, 8 << 20);
        assert_eq!((m.ordblks, m.smblks, m.usmblks, m.fsmblks), (0, 0, 0, 0));
    }

    #[test]
    fn mallinfo_clamps_instead_of_wrapping() {
        let s = Stats {
            mapped_bytes: 5 << 30,
            in_use_bytes: 3 << 30,
            large_bytes: 1 << 20,
            ..Stats::default()
        };
        let m = mallinfo(&s);
        assert_eq!(m.arena, c_int::MAX);
        assert_eq!(m.uordblks, c_int::MAX);
        assert_eq!(m.fordblks, c_int::MAX); // 2 GiB is one past INT_MAX
        assert_eq!(m.hblkhd, 1 << 20);
        // Counters read without a lock may briefly disagree: never negative.
        let odd = Stats {
            mapped_bytes: 1,
            in_use_bytes: 2,
            ..Stats::default()
        };
        assert_eq!(mallinfo2(&odd).fordblks, 0);
    }

    #[test]
    fn xml_has_glibcs_shape_and_the_figures() {
        let mut out = [0u8; XML_LEN];
        let n = xml(&sample(), &mut out).unwrap();
        let text = core::str::from_utf8(&out[..n]).unwrap();
        let mapped = 50u64 << 20;
        let system = format!(
            "<system type=\"current\" size=\"{mapped}\"/>\n\
             <system type=\"max\" size=\"{mapped}\"/>\n\
             <aspace type=\"total\" size=\"{mapped}\"/>\n\
             <aspace type=\"mprotect\" size=\"{mapped}\"/>\n"
        );
        let free = format!(
            "<total type=\"fast\" count=\"0\" size=\"0\"/>\n\
             <total type=\"rest\" count=\"0\" size=\"{}\"/>\n",
            30u64 << 20
        );
        let want = format!(
            "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n</sizes>\n{free}{system}</heap>\n\
             {free}<total type=\"mmap\" count=\"3\" size=\"{}\"/>\n{system}</malloc>\n",
            16u64 << 20
        );
        assert_eq!(text, want);
    }

    #[test]
    fn xml_of_the_largest_figures_fits() {
        let s = Stats {
            mapped_bytes: usize::MAX,
            large_bytes: usize::MAX,
            large_mappings: usize::MAX,
            ..Stats::default()
        };
        let mut out = [0u8; XML_LEN];
        assert!(xml(&s, &mut out).is_some());
        let mut small = [0u8; 100];
        assert_eq!(xml(&s, &mut small), None);
    }

    #[test]
    fn malloc_info_writes_the_document_and_rejects_options() {
        // SAFETY: tmpfile returns null or an open stream, used only here and
        // closed at the end; fread writes at most `out.len()` bytes.
        unsafe {
            assert_eq!(malloc_info(0, core::ptr::null_mut()), Err(libc::EINVAL));
            let fp = libc::tmpfile();
            assert!(!fp.is_null());
            assert_eq!(malloc_info(1, fp), Err(libc::EINVAL));
            assert_eq!(malloc_info(0, fp), Ok(()));
            libc::rewind(fp);
            let mut out = [0u8; XML_LEN];
            let n = libc::fread(out.as_mut_ptr().cast(), 1, out.len(), fp);
            libc::fclose(fp);
            let text = core::str::from_utf8(&out[..n]).unwrap();
            assert!(text.starts_with("<malloc version=\"1\">\n"), "{text}");
            assert!(text.ends_with("</malloc>\n"), "{text}");
        }
    }
}
