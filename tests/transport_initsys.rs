//! Init-system operations through the transport, against stand-in `systemctl` / `rc-service`
//! scripts (the test machine has no running init system). Own test binary: it changes PATH.

use std::time::Duration;

use k0sctl::host::InitSystem;
use k0sctl::transport::{ConnectSpec, Limits, Pool};

/// Removes the drop-in directory / conf file written by the test, and the parent
/// directories it had to create.
struct Cleanup(Vec<std::path::PathBuf>, Vec<std::path::PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
            let _ = std::fs::remove_file(p);
        }
        for d in &self.1 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[tokio::test]
async fn systemd_and_openrc_flows() {
    let bin = tempfile::tempdir().unwrap();
    let state = bin.path().join("state");
    let calls = bin.path().join("calls");
    // A service manager stand-in: start/stop flip a state file, status reads it.
    let fake = format!(
        "#!/bin/sh\necho \"$0 $*\" >> {calls}\ncase \"$*\" in\n\
         *start*|*restart*) echo running > {state} ;;\n\
         *stop*) rm -f {state} ;;\n\
         is-active*|*status*) [ -f {state} ] ;;\n\
         esac\n",
        calls = calls.display(),
        state = state.display()
    );
    for name in ["systemctl", "rc-service"] {
        let p = bin.path().join(name);
        std::fs::write(&p, &fake).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // SAFETY: the only test in this binary.
    unsafe {
        std::env::set_var(
            "PATH",
            format!(
                "{}:{}",
                bin.path().display(),
                std::env::var("PATH").unwrap()
            ),
        )
    };
    let pool = Pool::new(Limits::default());
    let mut r = pool.connect(&ConnectSpec::Localhost).await.unwrap();
    r.detect_privilege(None).await.unwrap();

    let svc = format!("k0sctltest{:08x}", rand::random::<u32>());
    let created: Vec<std::path::PathBuf> = ["/etc/conf.d", "/etc/systemd/system", "/etc/systemd"]
        .iter()
        .map(std::path::PathBuf::from)
        .filter(|d| !d.exists())
        .collect();
    let _cleanup = Cleanup(
        vec![
            format!("/etc/systemd/system/{svc}.service.d").into(),
            format!("/etc/conf.d/{svc}").into(),
        ],
        created,
    );
    for init in [InitSystem::Systemd, InitSystem::OpenRc] {
        assert!(!init.is_running(&r, &svc).await.unwrap());
        init.start(&r, &svc).await.unwrap();
        init.wait_state(&r, &svc, true, Duration::from_secs(30))
            .await
            .unwrap();
        init.restart(&r, &svc).await.unwrap();
        init.stop(&r, &svc).await.unwrap();
        init.wait_state(&r, &svc, false, Duration::from_secs(30))
            .await
            .unwrap();
        let e = init
            .wait_state(&r, &svc, true, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&svc), "{e}");
        let env = vec![("HTTP_PROXY".to_string(), "http://proxy:3128".to_string())];
        init.set_env(&r, &svc, &env).await.unwrap();
        let written = std::fs::read_to_string(init.env_file(&svc)).unwrap();
        assert_eq!(written, init.env_content(&env));
    }
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(calls.contains(&format!("systemctl start {svc}")), "{calls}");
    assert!(calls.contains("systemctl daemon-reload"), "{calls}");
    assert!(calls.contains(&format!("rc-service {svc} stop")), "{calls}");
}
