//! Which hosts get a k0s binary in this run ("Stage k0s binaries" and "Install k0s binaries"
//! decide alike).

use crate::k0s::version::K0sVersion;

use super::HostState;

/// Whether the host gets a k0s binary in this run (shared with "Install k0s binaries").
pub(crate) fn needs_binary(h: &HostState, target: &K0sVersion) -> bool {
    if h.config.reset || h.config.use_existing_k0s {
        return false;
    }
    let current = h.k0s.as_ref().and_then(|k| k.binary_version.as_ref());
    h.config.k0s_binary_path.is_some() || current != Some(target)
}

#[cfg(test)]
mod scripted_tests {
    use super::*;
    use crate::phases::testkit::Kit;

    #[test]
    fn a_binary_is_needed_unless_the_target_is_there() {
        let v = |s: &str| K0sVersion::parse(s).unwrap();
        let mut k = Kit::new(&["controller"]);
        k.running(0, "v1.31.1+k0s.0");
        let h = &mut k.state.hosts[0];
        assert!(!needs_binary(h, &v("v1.31.1+k0s.0")));
        assert!(needs_binary(h, &v("v1.32.0+k0s.0")));
        h.config.k0s_binary_path = Some("/tmp/k0s".into());
        assert!(
            needs_binary(h, &v("v1.31.1+k0s.0")),
            "a given local binary is always checked"
        );
        h.config.use_existing_k0s = true;
        assert!(!needs_binary(h, &v("v1.32.0+k0s.0")));
        h.config.use_existing_k0s = false;
        h.config.reset = true;
        assert!(!needs_binary(h, &v("v1.32.0+k0s.0")));
    }
}
