//! The kernel command line: its size limit (the kernel's `cmdline_size`, or
//! 2048 with the terminating NUL when the image does not say) and its bytes.

use super::layout::CMDLINE_DEFAULT_MAX;
use super::LinuxBootError;

/// Boot protocol version that introduced `cmdline_size` (2.06).
const CMDLINE_SIZE_VERSION: u16 = 0x0206;
/// Limit for bzImages older than 2.06 (boot.rst: "255 characters").
const OLD_PROTOCOL_MAX: usize = 255;

/// Most command-line characters (NUL excluded) the kernel accepts: from a
/// bzImage header when it has one, else Linux's COMMAND_LINE_SIZE - 1.
pub fn max_len(header: Option<(u16, u32)>) -> usize {
    match header {
        Some((version, size)) if version >= CMDLINE_SIZE_VERSION && size > 0 => size as usize,
        Some(_) => OLD_PROTOCOL_MAX,
        None => CMDLINE_DEFAULT_MAX - 1,
    }
}

/// The NUL-terminated bytes to write, or why they cannot be.
pub fn encode(cmdline: &str, max: usize) -> Result<Vec<u8>, LinuxBootError> {
    if cmdline.len() > max {
        return Err(LinuxBootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if cmdline.bytes().any(|b| b == 0) {
        return Err(LinuxBootError::CmdlineNul);
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_header() {
        assert_eq!(max_len(None), 2047);
        assert_eq!(max_len(Some((0x020f, 4095))), 4095);
        assert_eq!(max_len(Some((0x0205, 4095))), 255);
        assert_eq!(max_len(Some((0x0206, 0))), 255);
    }

    #[test]
    fn encode_checks_length_and_nul() {
        assert_eq!(encode("console=ttyS0", 2047).unwrap(), b"console=ttyS0\0");
        assert_eq!(encode("", 2047).unwrap(), b"\0");
        let at_limit = "a".repeat(2047);
        assert_eq!(encode(&at_limit, 2047).unwrap().len(), 2048);
        let too_long = "a".repeat(2048);
        assert!(matches!(
            encode(&too_long, 2047),
            Err(LinuxBootError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert!(matches!(
            encode("a\0b", 2047),
            Err(LinuxBootError::CmdlineNul)
        ));
    }
}
