//! The parent side of the child protocol, shared with `bench/` (`#[path]`): only `RESULT` differs.

use std::process::{Command, Stdio};

/// Everything a child printed: its `RESULT` and any other tagged lines
/// (`TAG rest of line`).
pub struct ChildOutput<M> {
    /// The parsed `RESULT` line.
    pub result: M,
    /// Every other line of its stdout.
    pub lines: Vec<String>,
}

impl<M> ChildOutput<M> {
    /// The lines tagged `tag`, with the tag and one space removed.
    pub fn tagged<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines.iter().filter_map(move |l| {
            let rest = l.strip_prefix(tag)?;
            if rest.is_empty() {
                Some(rest)
            } else {
                rest.strip_prefix(' ')
            }
        })
    }
}

/// Re-executes this binary with `var=value` set, the variables in `unset`
/// removed and `args`, waits for it, and parses its `RESULT` line with
/// `parse` (which gets the whole line). A fresh process per measurement
/// gives each one a clean heap and its own peak RSS. The child's stderr
/// goes straight to ours, so its progress and panics show as they happen.
pub fn run<M>(
    (var, value): (&str, &str),
    unset: &[&str],
    args: &[&str],
    parse: impl Fn(&str) -> Option<M>,
) -> Result<ChildOutput<M>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(&exe);
    cmd.env(var, value);
    for name in unset {
        cmd.env_remove(name);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("spawning {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "child `{var}={value} {} {}` failed ({}); stdout:\n{stdout}",
            exe.display(),
            args.join(" "),
            out.status
        ));
    }
    let mut result = None;
    let mut lines = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("RESULT ") {
            result = parse(line);
        } else {
            lines.push(line.to_string());
        }
    }
    let result =
        result.ok_or_else(|| format!("child printed no valid RESULT line; stdout:\n{stdout}"))?;
    Ok(ChildOutput { result, lines })
}

/// A `RESULT` list (`1,2,3`, one number per run) back into numbers; `None`
/// if any is malformed, so that a garbled line is rejected, not half read.
pub fn parse_list(v: &str) -> Option<Vec<u64>> {
    v.split(',').map(str::parse).collect::<Result<_, _>>().ok()
}
