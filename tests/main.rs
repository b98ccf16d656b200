//! Keel's multi-process integration tests, grouped by area, over one shared harness.

mod harness;

mod access_diff;
mod alarm_diff;
mod auth_cluster;
mod auth_diff;
mod auth_random;
mod bad_input;
mod cluster;
mod concurrency_diff;
mod corrupt_check;
mod crash;
mod debug_diff;
mod etcdctl_diff;
mod force_new_cluster;
mod gateway_diff;
mod gc;
mod health_diff;
mod keepalive_diff;
mod kube_client;
mod kubectl;
mod kv_client;
mod lease_diff;
mod logs;
mod metrics_diff;
mod store_flags;
mod tls_diff;
mod tls_flags_diff;
mod up;
mod watch_diff;
mod watch_guarantees;
mod watch_lease;
