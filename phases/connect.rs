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
                    tracing::info!(about = %h.name, "connected");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::Kit;

    /// A localhost host connects (no network); a host the connection layer cannot serve fails
    /// alone, named once, and the others keep their connection.
    #[tokio::test]
    async fn connects_each_host_and_names_the_one_that_fails() {
        let yaml = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    localhost:\n      enabled: true\n  - role: worker\n    ssh:\n      address: 10.0.0.2\n";
        let mut k = Kit::from_yaml(yaml, Default::default());
        for h in &mut k.state.hosts {
            h.remote = None;
            h.host = None;
        }
        k.state.hosts[1].config.ssh = None;
        k.state.hosts[1].config.win_rm = Some(crate::config::WinRm {
            address: "10.0.0.2".into(),
            ..Default::default()
        });
        assert!(Connect.should_run(&k.state));
        let e = k.run(&Connect).await.unwrap_err().to_string();
        assert!(e.contains(TITLE), "{e}");
        assert!(e.contains("winRM connections are not supported"), "{e}");
        assert!(!e.contains("- localhost"), "{e}");
        let local = &k.state.hosts[0];
        assert!(local.remote.is_some() && local.spec.is_some());
        assert!(k.state.hosts[1].remote.is_none());
        let out = local
            .remote
            .as_ref()
            .unwrap()
            .run_str("echo hi")
            .await
            .unwrap();
        assert_eq!(out, "hi");
        k.state.pool.close_all().await;
    }
}
