//! Several controller URLs (design `docs/design/ha-controller.md` §7.1), against a real rack:
//! a URL that refuses (a closed loopback port), a TLS server that is not the controller (an
//! agent's API) and a name that expands into refusing addresses are passed over by the client,
//! the CLI and the agent, and a change refused before it was sent runs once at the next URL.
//! A standby's 421 is tested where standbys exist (`ha.rs`).

use std::net::Ipv4Addr;
use std::time::Duration;

use torc_client::Client;
use torc_test_utils::{LocalRack, RackOptions, free_port, python_task, stdout_of, wait_for};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// An `https` URL on loopback where nothing listens.
fn closed() -> String {
    format!("https://127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST))
}

fn client(rack: &LocalRack, controllers: &str) -> Client {
    Client::from_files(controllers, rack.token.clone(), rack.ca_path().as_deref()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_the_cli_and_an_agent_pass_over_controllers_that_do_not_answer() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    let url = rack.url();
    let list = format!("{},{url}", closed());

    // A read, and a change: refused before it was sent, it runs at the next URL.
    let c = client(&rack, &list);
    assert_eq!(c.status().await.unwrap().rack, "torc-scheduler");
    assert_eq!(
        c.base_url(),
        url,
        "the client stays with the one that answered"
    );
    let fresh = client(&rack, &list);
    let name = "endpoints-a".parse().unwrap();
    fresh.set_secret(&name, "one").await.unwrap();
    assert_eq!(c.secret(&name).await.unwrap(), "one");
    assert_eq!(c.controllers(), list);

    // A TLS server that is not a controller (an agent's API: its certificate names its
    // address, not the controller) fails before anything is sent: the change moves on too.
    let agent_url = c
        .node(&"bladerunner1".parse().unwrap())
        .await
        .unwrap()
        .agent_url
        .expect("the agent registered its URL");
    let via_agent = client(&rack, &format!("{agent_url},{url}"));
    let name = "endpoints-b".parse().unwrap();
    via_agent.set_secret(&name, "two").await.unwrap();
    assert_eq!(via_agent.base_url(), url);

    // A name is dialled by its addresses (the rack's TLS checks the controller's name,
    // whatever address is dialled).
    let port = free_port(Ipv4Addr::LOCALHOST);
    let named = client(&rack, &format!("https://localhost:{port},{url}"));
    named.whoami().await.unwrap();
    let err = client(&rack, &format!("https://localhost:{port}"))
        .status()
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "the error names the address dialled: {err}"
    );

    // Nobody answers: the error names every URL tried, and a change is not run anywhere.
    let (a, b) = (closed(), closed());
    let err = client(&rack, &format!("{a},{b}"))
        .set_secret(&"endpoints-c".parse().unwrap(), "three")
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err}");
    for u in [&a, &b] {
        assert!(err.to_string().contains(u.as_str()), "{u} in {err}");
    }

    // The CLI, by flag and by environment.
    let (ok, out, err) = rack.torc(TORC, &["nodes", "--json", "--controller", &list]);
    assert!(ok, "{err}");
    assert!(out.contains("bladerunner1"), "{out}");
    let out = std::process::Command::new(TORC)
        .args(["status"])
        .envs(rack.cli_env())
        .env("TORC_CONTROLLER", &list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _, err) = rack.torc(TORC, &["status", "--controller", &format!("{a},{b}")]);
    assert!(!ok);
    assert!(err.contains(&a) && err.contains(&b), "{err}");

    // An agent given a dead URL first registers at the next one, runs what it is given,
    // and gives its tasks every URL and the one it follows.
    rack.kill_agent("bladerunner1");
    let agent_list = format!("{},{}", closed(), rack.rack_url());
    rack.start_agent_following("bladerunner1", &agent_list)
        .unwrap();
    let script = "import os; print('ALL=' + os.environ['TORC_CONTROLLERS']); \
                  print('ONE=' + os.environ['TORC_CONTROLLER'])";
    let task = c
        .launch(&python_task("controllers", "bladerunner1", script, &[]))
        .await
        .unwrap();
    let printed = wait_for(
        "the task's environment",
        Duration::from_secs(30),
        || async { Some(stdout_of(&c, &task.id).await).filter(|o| o.contains("ONE=")) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));
    assert!(
        printed.contains(&format!("ALL={agent_list}\n")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("ONE={}\n", rack.rack_url())),
        "{printed}"
    );
}
