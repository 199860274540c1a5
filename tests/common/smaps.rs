//! `/proc/self/smaps`: what the kernel says about one of our mappings.

#[derive(Debug)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub perms: String,
    pub path: String,
    pub locked_kb: usize,
    pub flags: Vec<String>,
}

/// The smaps entry of the mapping that contains `addr`.
pub fn mapping_of(addr: usize) -> Mapping {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut found: Option<Mapping> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            if found.is_some() {
                break;
            }
            if (start..end).contains(&addr) {
                let perms = words.next().unwrap().to_string();
                let path = words.skip(3).collect::<Vec<_>>().join(" ");
                found = Some(Mapping {
                    start,
                    end,
                    perms,
                    path,
                    locked_kb: 0,
                    flags: Vec::new(),
                });
            }
            continue;
        }
        if let Some(m) = found.as_mut() {
            if let Some(rest) = line.strip_prefix("Locked:") {
                m.locked_kb = rest.trim().trim_end_matches("kB").trim().parse().unwrap();
            } else if let Some(rest) = line.strip_prefix("VmFlags:") {
                m.flags = rest.split_whitespace().map(String::from).collect();
            }
        }
    }
    found.unwrap_or_else(|| panic!("no mapping contains {addr:#x}"))
}

impl Mapping {
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}
