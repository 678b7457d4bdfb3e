//! `k0sctl config validate` (the other `config` subcommands talk to a cluster).

use crate::exit::CliError;

use super::{ConfigValidateArgs, Context};

/// Loads and validates; prints warnings and a one-line summary. Errors exit with the
/// invalid-config code and list every problem with file:line:column.
pub fn validate(ctx: &Context, a: ConfigValidateArgs) -> Result<(), CliError> {
    let loaded = ctx.load_config(&a.config)?;
    let c = &loaded.cluster;
    let controllers = c.spec.hosts.iter().filter(|h| h.is_controller()).count();
    println!(
        "{}: valid configuration for cluster {:?}: {} hosts ({} controllers, {} workers){}",
        loaded.origin.display(),
        c.metadata.name,
        c.spec.hosts.len(),
        controllers,
        c.spec.hosts.len() - controllers,
        if loaded.manifests.is_empty() {
            String::new()
        } else {
            format!(", {} additional manifests", loaded.manifests.len())
        }
    );
    Ok(())
}
