# Every Consul agent of a shopmesh checkout: the single mesh's one server, and the cluster's three servers and its
# client agent. Whether it is a server (-server, -bootstrap-expect), its name, addresses, ports and data folder
# come from the command line (shopmesh/tooling/programs.py), so that they follow the SHOPMESH_* settings.
node_name        = "shopmesh"
datacenter       = "dc1"
bind_addr        = "127.0.0.1"
advertise_addr   = "127.0.0.1"
client_addr      = "127.0.0.1"
log_level        = "INFO"

ui_config {
  enabled = true
}

ports {
  # Only the HTTP API/UI, DNS and the server's own RPC and LAN gossip are needed on one machine.
  serf_wan = -1
  grpc     = -1
  grpc_tls = -1
}

disable_update_check = true

performance {
  # Raft's timings at their production setting (the default, 5, suits the smallest cloud machines): a single
  # server elects itself in about a second instead of several.
  raft_multiplier = 1
}

telemetry {
  # The agent's metrics in Prometheus's format at /v1/agent/metrics?format=prometheus (Prometheus finds the agents
  # as the consul service). Without a retention time Consul serves no Prometheus metrics at all.
  prometheus_retention_time = "1m"
  disable_hostname          = true
}
