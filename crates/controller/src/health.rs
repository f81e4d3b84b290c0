//! Runs service health checks: TCP connect, HTTP GET, or a command, from the controller.
//! The rules (when a check is due, what failures lead to) live in the rack's supervisor
//! (`rack::supervisor`); this module only performs the probes and reports their outcome.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_millis;
use tokio::net::TcpStream;

use crate::controller::Controller;
use crate::rack::{HealthCheck, ProbeFailure};
use crate::settings::Probe;

fn fill(text: &str, check: &HealthCheck) -> String {
    torc_types::expand_placeholders(text, check.ip, &check.ports)
}

async fn probe(http: &reqwest::Client, check: &HealthCheck) -> Result<(), ProbeFailure> {
    let timeout = Duration::from_millis(check.timeout_ms.max(1));
    let timeout_ms = check.timeout_ms;
    match &check.probe {
        Probe::Tcp(addr) => {
            let addr = fill(addr, check);
            match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(source)) => Err(ProbeFailure::Connect { addr, source }),
                Err(_) => Err(ProbeFailure::ConnectTimeout { addr, timeout_ms }),
            }
        }
        Probe::Http(url) => {
            let url = fill(url, check);
            match http.get(&url).timeout(timeout).send().await {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
                Ok(r) => Err(ProbeFailure::HttpStatus {
                    url,
                    status: r.status(),
                }),
                Err(source) => Err(ProbeFailure::Http { url, source }),
            }
        }
        Probe::Command(argv) => {
            let argv: Vec<String> = argv.iter().map(|a| fill(a, check)).collect();
            let Some((cmd, args)) = argv.split_first() else {
                return Err(ProbeFailure::EmptyCommand);
            };
            let cmd = cmd.clone();
            let child = match tokio::process::Command::new(&cmd)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
            {
                Ok(child) => child,
                Err(source) => return Err(ProbeFailure::Command { cmd, source }),
            };
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(Ok(out)) if out.status.success() => Ok(()),
                Ok(Ok(out)) => Err(ProbeFailure::Exited {
                    cmd,
                    status: out.status,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                }),
                Ok(Err(source)) => Err(ProbeFailure::Command { cmd, source }),
                Err(_) => Err(ProbeFailure::CommandTimeout { cmd, timeout_ms }),
            }
        }
    }
}

/// Starts due checks every 100 ms; each runs on its own task and reports back.
pub(crate) async fn run(ctl: Arc<Controller>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_millis();
        let due = ctl.start_due_health_checks(now);
        for check in due {
            let ctl = Arc::clone(&ctl);
            tokio::spawn(async move {
                let result = probe(&ctl.http, &check).await;
                let outcome = ctl
                    .change(move |rack| {
                        rack.record_health(&check.service, &check.task, result, now_millis());
                        Ok(())
                    })
                    .await;
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "cannot record a health check");
                }
            });
        }
    }
}
