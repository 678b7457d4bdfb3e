//! `k0sctl version`: this build's version, or the newest k0s / k0sctl release online.

use clap::Args;

use crate::exit::{CliError, Code};
use crate::k0s::release;

use super::Context;

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Retrieve the latest k0s version number
    #[arg(long)]
    pub k0s: bool,
    /// Retrieve the latest k0sctl version number
    #[arg(long)]
    pub k0sctl: bool,
    /// When used in conjunction with --k0s, a pre release is accepted as the latest version
    #[arg(long)]
    pub pre: bool,
}

pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
pub const COMMIT: &str = env!("K0SCTL_COMMIT");

pub fn run(_ctx: &Context, a: VersionArgs) -> Result<(), CliError> {
    if !a.k0s && !a.k0sctl {
        println!("version: {VERSION}\ncommit: {COMMIT}");
        return Ok(());
    }
    super::block_on(async {
        if a.k0s {
            let v = release::latest_k0s(a.pre)
                .await
                .map_err(lookup_failed("k0s"))?;
            println!("{}", v.to_string().trim_start_matches('v'));
        }
        if a.k0sctl {
            let t = release::latest_k0sctl(a.pre)
                .await
                .map_err(lookup_failed("k0sctl"))?;
            println!("{t}");
        }
        Ok(())
    })
}

fn lookup_failed(what: &'static str) -> impl Fn(anyhow::Error) -> CliError {
    move |e| {
        CliError::new(
            Code::Unreachable,
            format!(
                "failed to look up the latest {what} version: {e:#} (check network access, or set spec.k0s.version in the configuration)"
            ),
        )
    }
}
