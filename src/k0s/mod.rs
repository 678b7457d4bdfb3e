//! k0s knowledge: version strings and (later) the k0s command lines k0sctl runs on hosts.

pub mod version;
