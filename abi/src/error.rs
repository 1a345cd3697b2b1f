//! How every ember binary prints an error: the error and its causes on one
//! line ("cannot start x: Permission denied"), so a line on stderr, in a log
//! or in a message to the host names the root cause. `core::error::Error`,
//! so the freestanding guests can use it too.

use alloc::string::{String, ToString};
use core::error::Error;

/// `e` and its `source()` chain, joined by ": ".
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    for cause in causes(e) {
        s.push_str(": ");
        s.push_str(&cause.to_string());
    }
    s
}

/// Only `e`'s sources, joined by ": " (empty when it has none): for lines
/// that print `e` itself first.
pub fn sources(e: &dyn Error) -> String {
    let mut s = String::new();
    for (i, cause) in causes(e).enumerate() {
        if i > 0 {
            s.push_str(": ");
        }
        s.push_str(&cause.to_string());
    }
    s
}

fn causes<'a>(e: &'a dyn Error) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    core::iter::successors(e.source(), |&c| c.source())
}

#[cfg(test)]
mod tests {
    use core::fmt;

    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<&'static Layer>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.map(|l| l as &(dyn Error + 'static))
        }
    }

    static ROOT: Layer = Layer("Permission denied", None);
    static MID: Layer = Layer("cannot open /dev/kvm", Some(&ROOT));
    static TOP: Layer = Layer("cannot create the VM", Some(&MID));

    #[test]
    fn chain_and_sources() {
        assert_eq!(
            chain(&TOP),
            "cannot create the VM: cannot open /dev/kvm: Permission denied"
        );
        assert_eq!(sources(&TOP), "cannot open /dev/kvm: Permission denied");
        assert_eq!(chain(&ROOT), "Permission denied");
        assert_eq!(sources(&ROOT), "");
    }
}
