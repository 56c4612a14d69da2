//! The monitor's gauges, read back through the Prometheus exporter the binary uses. A test
//! binary of its own: the metrics recorder is process-global.

use std::process::Command;
use std::time::Duration;

use lsnpool_monitor::{spawn_monitor, MonitorParams};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_per_node() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // `up` resets r2's apply delay; this test does not watch r2, but keep whatever is set.
    let mut up = Command::new(root.join("testenv/pgenv.sh"));
    up.arg("up").current_dir(&root);
    let delay = Command::new(root.join("testenv/pgenv.sh"))
        .args(["psql", "r2", "-XAtc", "SHOW recovery_min_apply_delay"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let (Some(d), None) = (delay, std::env::var_os("R2_APPLY_DELAY")) {
        up.env("R2_APPLY_DELAY", d);
    }
    assert!(up.status().expect("run testenv/pgenv.sh up").success());

    // Installed before spawn_monitor: the pollers bind their gauge handles when they start.
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder in this process");

    let mut p = MonitorParams::new(
        "appdb",
        "127.0.0.1:55432",
        vec!["127.0.0.1:55433".into(), "127.0.0.1:1".into()],
        "postgres",
        Some("postgres".into()),
        "appdb",
    );
    p.poll_interval = Duration::from_millis(10);
    let (state, _handle) = spawn_monitor(p);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !(state.primary().up && state.snapshot(lsnpool_router::NodeId(0)).in_rotation) {
        assert!(
            std::time::Instant::now() < deadline,
            "nodes did not come up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let text = prometheus.render();
    let value = |name: &str, node: &str| -> Option<f64> {
        let labels = format!("{name}{{cluster=\"appdb\",node=\"{node}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&labels))
            .and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(
        value("lsnpool_node_up", "127.0.0.1:55432"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("lsnpool_node_up", "127.0.0.1:55433"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value("lsnpool_node_up", "127.0.0.1:1"), Some(0.0), "{text}");
    assert!(
        value("lsnpool_replica_lag_bytes", "127.0.0.1:55433").is_some(),
        "{text}"
    );
    assert!(
        value("lsnpool_replica_lag_seconds", "127.0.0.1:55433").is_some(),
        "{text}"
    );
    // Any node may be a replica after a failover, so every node has the gauges; the primary's
    // read 0. Fencing is counted per node.
    assert_eq!(
        value("lsnpool_replica_lag_bytes", "127.0.0.1:55432"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value("lsnpool_node_fenced", "127.0.0.1:55432"), Some(0.0), "{text}");
}
