//! Runs service health checks: TCP connect, HTTP GET, or a command, from the controller.
//! The rules (when a check is due, what failures lead to) live in the rack's supervisor
//! (`rack::supervisor`); this module only performs the probes and reports their outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use torc_types::now_millis;

use crate::controller::Controller;
use crate::rack::HealthCheck;
use crate::settings::Probe;

fn fill(text: &str, check: &HealthCheck) -> String {
    torc_types::expand_placeholders(text, check.ip, &check.ports)
}

async fn probe(http: &reqwest::Client, check: &HealthCheck) -> Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms.max(1));
    match &check.probe {
        Probe::Tcp(addr) => {
            let addr = fill(addr, check);
            match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
                Err(_) => Err(format!("tcp {addr}: no answer in {} ms", check.timeout_ms)),
            }
        }
        Probe::Http(url) => {
            let url = fill(url, check);
            match http.get(&url).timeout(timeout).send().await {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
                Ok(r) => Err(format!("http {url}: {}", r.status())),
                Err(e) => Err(format!("http {url}: {e}")),
            }
        }
        Probe::Command(argv) => {
            let argv: Vec<String> = argv.iter().map(|a| fill(a, check)).collect();
            let Some((cmd, args)) = argv.split_first() else {
                return Err("empty health command".into());
            };
            let child = tokio::process::Command::new(cmd)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("command {cmd}: {e}"))?;
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(Ok(out)) if out.status.success() => Ok(()),
                Ok(Ok(out)) => Err(format!(
                    "command {cmd}: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Ok(Err(e)) => Err(format!("command {cmd}: {e}")),
                Err(_) => Err(format!(
                    "command {cmd}: no result in {} ms",
                    check.timeout_ms
                )),
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
