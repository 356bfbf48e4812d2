"""`make chaos`: the failure suite. Each case breaks something on the local control plane (the operator killed or
frozen, the API server restarted, a watch gap, concurrent editors, Prometheus misbehaving, hours compressed into a
soak) and measures what it cost, beside a goal. `python -m modeldeploy_testkit.chaos --help` lists the cases."""
