//! `/proc/<pid>/stat`: a process's state and parent, for liveness checks
//! and for killing a child only while it is still ours.

/// The fields of `/proc/<pid>/stat` emberd reads.
pub struct Stat {
    /// `R`, `S`, `D`, `Z`, `X`, ...
    pub state: char,
    pub ppid: u32,
}

/// The fields of a stat line from field 3 (`state`) on. The command name
/// may hold spaces and parentheses, so fields are counted after the last `)`.
pub fn fields_after_comm(line: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(line.rsplit_once(')')?.1.split_whitespace())
}

/// `pid`'s stat line, parsed (None: gone, or unreadable).
pub fn stat(pid: u32) -> Option<Stat> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = fields_after_comm(&line)?;
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

/// Whether `pid` is still a running process (neither gone nor a zombie).
pub fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let s = super::stat(me).expect("own stat");
        assert!(super::running(me));
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
    }
}
