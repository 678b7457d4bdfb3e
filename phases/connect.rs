//! "Connect to hosts": one connection per host, in parallel; unreachable hosts fail the run
//! with the "unreachable" exit code and the transport's explanation (address, what to check).

use crate::connect::spec_for;
use crate::phases::Failure;

use super::{Phase, PhaseFuture, State, collect, each_host};

pub struct Connect;

pub const TITLE: &str = "Connect to hosts";

impl Phase for Connect {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let base = state.config.base_dir.clone();
            let (pool, ssh_config) = (&state.pool, &state.ssh_config);
            let results = each_host(pool.limits(), state.hosts.iter_mut(), |h| {
                let base = &base;
                async move {
                    // Whatever the transport's reason, the host could not be reached.
                    let spec = spec_for(&h.config, base, ssh_config).map_err(Failure::connect)?;
                    let remote = pool.connect(&spec).await.map_err(Failure::connect)?;
                    tracing::info!("{}: connected", h.name);
                    h.spec = Some(spec);
                    h.remote = Some(remote);
                    Ok(())
                }
            })
            .await;
            collect(TITLE, results)
        })
    }
}
