"""The xDS control plane: Consul's passing service instances, served to Envoy over ADS."""
